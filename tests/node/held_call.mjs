// A write call held for approval, through the official TypeScript SDK (npm
// `@modelcontextprotocol/sdk`) at its default request timeout.
// Usage: node held_call.mjs URL KEY. Calls `fixture__slow` and prints one JSON line:
// {"result": text} when it ran, or {"error": message, "code": n, "data": data} when refused.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [url, key] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: 'portcullis-held', version: '1.0.0' });
await client.connect(transport);
try {
  const r = await client.callTool({ name: 'fixture__slow', arguments: { ms: 0 } });
  console.log(JSON.stringify({ result: r.content[0].text, is_error: r.isError ?? false }));
} catch (e) {
  console.log(JSON.stringify({ error: e.message, code: e.code, data: e.data }));
} finally {
  await client.close();
}
