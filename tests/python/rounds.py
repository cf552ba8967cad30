"""Multi-round requests (2026-07-28 `InputRequiredResult`) through the gateway, driven by the
official MCP Python SDK: its `Client` answers each round's input requests with the callbacks
given here and retries with the gateway's `requestState`, until the result is complete.

Usage: rounds.py URL KEY MODE
  all:      every callback; calls `modern__test_input_required_result_multi_round` (two rounds),
            `modern__test_input_required_result_multiple_inputs` (three inputs at once) and gets
            the prompt `modern__test_input_required_result_prompt`.
  sampling: only a sampling callback; calls `modern__test_input_required_result_capabilities`.
Prints one JSON line: {"results": [text, ...], "asked": [what the callbacks were asked, ...]}
or {"error": message, "code": code}.
"""

import asyncio
import json
import sys

import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

asked: list[str] = []


async def elicit(context, params):
    asked.append(f"elicitation: {params.message}")
    content = {"color": "blue"} if "color" in params.message else {"name": "Alice"}
    if "context" in params.message:
        content = {"context": "the quarterly report"}
    return types.ElicitResult(action="accept", content=content)


async def sample(context, params):
    asked.append(f"sampling: {params.messages[0].content.text}")
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text="Hello from the model"),
        model="test-model",
        stop_reason="endTurn",
    )


async def roots(context):
    asked.append("roots")
    return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])


def text(result) -> str:
    return result.content[0].text


async def main(url: str, key: str, mode: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    timeout = httpx2.Timeout(30.0, read=30.0)
    callbacks = {"sampling_callback": sample}
    if mode == "all":
        callbacks.update(elicitation_callback=elicit, list_roots_callback=roots)
    results: list[str] = []
    async with create_mcp_http_client(headers=headers, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        info = types.Implementation(name="portcullis-rounds", version="1.0")
        async with Client(transport, mode="2026-07-28", cache=None, client_info=info, **callbacks) as c:
            try:
                if mode == "all":
                    results.append(text(await c.call_tool("modern__test_input_required_result_multi_round", {})))
                    results.append(text(await c.call_tool("modern__test_input_required_result_multiple_inputs", {})))
                    p = await c.get_prompt("modern__test_input_required_result_prompt")
                    results.append(p.messages[0].content.text)
                else:
                    results.append(text(await c.call_tool("modern__test_input_required_result_capabilities", {})))
            except Exception as e:  # MCPError for a JSON-RPC error
                error = getattr(e, "error", None)
                if error is None:
                    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
                    return 1
                print(json.dumps({"error": error.message, "code": error.code}))
                return 0
    print(json.dumps({"results": results, "asked": asked}))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3])))
