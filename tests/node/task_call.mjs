// A write call held for approval followed as an MCP task (2025-11-25 task augmentation), through
// the official TypeScript SDK (npm `@modelcontextprotocol/sdk`, its experimental tasks client).
// Usage: node task_call.mjs URL KEY MODE [TASK_ID]
//   stream: lists tools, calls `fixture__slow` as a task and follows it to the end; prints
//           {"support": ..., "created": id} once the task exists, then the outcome line.
//   create: the same, but stops once the task exists.
//   follow TASK_ID: follows an existing task (tasks/get, then tasks/result) in a new session.
//   cancel TASK_ID: cancels it.
// Outcome lines: {"status", "result": text, "is_error"} or {"status", "error", "code", "data"}.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js';

const [url, key, mode, taskId] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: 'portcullis-task', version: '1.0.0' });
await client.connect(transport);
const say = (v) => console.log(JSON.stringify(v));
const failed = (e, status) => say({ status, error: e.message, code: e.code, data: e.data });
const tasks = client.experimental.tasks;

async function follow(id) {
  for (;;) {
    const t = await tasks.getTask(id);
    if (t.status === 'working' || t.status === 'input_required') {
      await new Promise((r) => setTimeout(r, t.pollInterval ?? 1000));
      continue;
    }
    if (t.status === 'cancelled') return say({ status: t.status, message: t.statusMessage });
    try {
      const r = await tasks.getTaskResult(id, CallToolResultSchema);
      return say({ status: t.status, result: r.content[0]?.text, is_error: r.isError ?? false,
        related: r._meta?.['io.modelcontextprotocol/related-task']?.taskId });
    } catch (e) {
      return failed(e, t.status);
    }
  }
}

try {
  if (mode === 'stream' || mode === 'create') {
    const { tools } = await client.listTools();
    const support = tools.find((t) => t.name === 'fixture__slow')?.execution?.taskSupport ?? null;
    const stream = tasks.callToolStream({ name: 'fixture__slow', arguments: { ms: 0 } },
      CallToolResultSchema, { task: { ttl: 60000 } });
    // The status is the last one the SDK saw while it followed the task.
    let status = null;
    for await (const m of stream) {
      if (m.type === 'taskCreated') {
        status = m.task.status;
        say({ support, created: m.task.taskId, status });
        if (mode === 'create') break;
      } else if (m.type === 'taskStatus') {
        status = m.task.status;
      } else if (m.type === 'result') {
        say({ status, result: m.result.content[0]?.text, is_error: m.result.isError ?? false });
      } else if (m.type === 'error') {
        failed(m.error, status);
      }
    }
  } else if (mode === 'follow') {
    await follow(taskId);
  } else if (mode === 'cancel') {
    const t = await tasks.cancelTask(taskId);
    say({ status: t.status });
  }
} catch (e) {
  failed(e, 'error');
} finally {
  await client.close();
}
