// Preloaded into the MCP server the tests start (node --require): every server it opens
// listens on 127.0.0.1 only, on the port PORT names (0: any free one), and says which
// port it got on stderr ("LISTENING <port>"), so that tests need no fixed port and
// nothing listens beyond loopback.
const net = require("node:net");

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = typeof args[0] === "object" ? Number(args[0].port ?? 0) : Number(args[0] ?? 0);
  const done = args.find((a) => typeof a === "function");
  this.once("listening", () => process.stderr.write(`LISTENING ${this.address().port}\n`));
  return done ? listen.call(this, port, "127.0.0.1", done) : listen.call(this, port, "127.0.0.1");
};
