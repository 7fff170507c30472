// What the package claims to be: coloured console logging.
const paint = (code) => (s) => `\u001b[${code}m${s}\u001b[0m`;
module.exports = { red: paint(31), green: paint(32), yellow: paint(33) };
