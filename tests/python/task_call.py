"""A write call held for approval, followed as an MCP task (the 2026-07-28 tasks extension,
`io.modelcontextprotocol/tasks`), through the official MCP Python SDK.

The SDK has no tasks client of its own; it has the client-extension interface an extension
plugs into: `ClientExtension` declares the extension in every request's capabilities and a
`ResultClaim` takes the `task` result a `tools/call` may answer with. The extension here follows
the task with `tasks/get` (sent through the SDK's session) until it ends.

Usage: task_call.py URL KEY MODE [TASK_ID]
  stream: calls `fixture__slow` and follows the task to its end; prints {"created": id} when
          the task exists, then the outcome line.
  create: the same, but stops once the task exists.
  follow TASK_ID: follows an existing task in a new client.
  cancel TASK_ID: cancels it, then prints what `tasks/get` says.
  plain: calls `fixture__slow` without declaring the extension.
Outcome lines: {"status", "result": text, "is_error"} or {"status", "error", "code", "data"}.
"""

import asyncio
import json
import sys
from typing import Any, Literal

import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

EXTENSION = "io.modelcontextprotocol/tasks"


class Created(types.Result):
    result_type: Literal["task"]
    task_id: str
    status: str
    status_message: str | None = None
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class State(types.Result):
    task_id: str
    status: str
    status_message: str | None = None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class Ack(types.Result):
    pass


class TaskRef(types.RequestParams):
    task_id: str


class TasksGet(types.Request[TaskRef, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskRef
    name_param = "taskId"


class TasksCancel(types.Request[TaskRef, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskRef
    name_param = "taskId"


class TaskEnded(Exception):
    def __init__(self, state: State):
        super().__init__(state.status)
        self.state = state


async def follow(session, task_id: str) -> State:
    while True:
        s = await session.send_request(TasksGet(params=TaskRef(task_id=task_id)), State)
        if s.status not in ("working", "input_required"):
            return s
        await asyncio.sleep((s.poll_interval_ms or 1000) / 1000)


class Tasks(ClientExtension):
    identifier = EXTENSION

    def __init__(self, stop_at_creation: bool):
        self.stop_at_creation = stop_at_creation

    def claims(self):
        return [ResultClaim(result_type="task", model=Created, resolve=self.resolve)]

    async def resolve(self, created: Created, ctx: ClaimContext) -> types.CallToolResult:
        say({"created": created.task_id, "status": created.status, "ttl_ms": created.ttl_ms})
        if self.stop_at_creation:
            raise TaskEnded(State(task_id=created.task_id, status="created"))
        s = await follow(ctx.session, created.task_id)
        if s.status == "completed" and s.result is not None:
            return types.CallToolResult.model_validate(s.result)
        raise TaskEnded(s)


def say(v: Any) -> None:
    print(json.dumps(v), flush=True)


def outcome(s: State) -> dict[str, Any]:
    if s.status == "completed" and s.result is not None:
        r = types.CallToolResult.model_validate(s.result)
        return {"status": s.status, "result": r.content[0].text, "is_error": r.is_error}
    e = s.error or {}
    return {"status": s.status, "error": e.get("message"), "code": e.get("code"), "data": e.get("data")}


async def main(url: str, key: str, mode: str, task_id: str | None) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx2.Timeout(30.0, read=30.0)
    extensions = [] if mode == "plain" else [Tasks(stop_at_creation=mode == "create")]
    async with create_mcp_http_client(headers=headers, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        info = types.Implementation(name="portcullis-task", version="1.0")
        async with Client(
            transport, mode="2026-07-28", cache=None, client_info=info, extensions=extensions
        ) as c:
            try:
                if mode in ("stream", "create", "plain"):
                    r = await c.call_tool("fixture__slow", {"ms": 0})
                    say({"status": "completed", "result": r.content[0].text, "is_error": r.is_error})
                elif mode == "follow":
                    say(outcome(await follow(c.session, task_id)))
                elif mode == "cancel":
                    ack = await c.session.send_request(TasksCancel(params=TaskRef(task_id=task_id)), Ack)
                    s = await c.session.send_request(TasksGet(params=TaskRef(task_id=task_id)), State)
                    say({"ack": ack.model_dump(by_alias=True, exclude_none=True), "status": s.status})
            except TaskEnded as ended:
                if ended.state.status != "created":
                    say(outcome(ended.state))
            except Exception as e:  # MCPError for a JSON-RPC error
                error = getattr(e, "error", None)
                if error is None:
                    say({"status": "error", "error": f"{type(e).__name__}: {e}"})
                    return 1
                say({"status": "error", "error": error.message, "code": error.code, "data": error.data})
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], (sys.argv[4:] or [None])[0])))
