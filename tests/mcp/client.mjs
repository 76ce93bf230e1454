// A real MCP client (the official TypeScript SDK) against dgidgi's /mcp, for
// tests/api/mcp.rs. Usage: node client.mjs <url> <api key> list
//                         node client.mjs <url> <api key> call <tool> <JSON arguments>
// Prints one JSON line: {"tools": [...]} or {"result": ..., "progress": [...]}, or
// {"error": "..."} (exit code 1).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key, command, tool, args] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "dgidgi-tests", version: "1.0.0" });
try {
  await client.connect(transport);
  if (command === "list") {
    const { tools } = await client.listTools();
    console.log(JSON.stringify({ server: client.getServerVersion(), tools }));
  } else if (command === "call") {
    const progress = [];
    const result = await client.callTool(
      { name: tool, arguments: JSON.parse(args ?? "{}") },
      undefined,
      { onprogress: (p) => progress.push(p), timeout: 60000 },
    );
    console.log(JSON.stringify({ result, progress }));
  } else {
    throw new Error(`unknown command ${command}`);
  }
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.message ?? e) }));
  process.exitCode = 1;
}
