// node-app: a small express service (examples/node-app/README.md).
const express = require("express");

const app = express();
app.get("/healthz", (_req, res) => res.json({ ok: true }));

if (require.main === module) {
  const port = Number(process.env.PORT || 8080);
  app.listen(port, () => console.log(`listening on ${port}`));
}

module.exports = app;
