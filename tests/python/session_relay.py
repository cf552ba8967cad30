"""What an upstream sends a client in the middle of a call (log messages, sampling and elicitation
requests), through the gateway, with the official MCP Python SDK (PyPI `mcp`).

Usage: session_relay.py URL KEY MODE, where MODE is
- `per_session`: the fixture server has `connection: per_session`. Two sessions run calls side by
  side: each gets its own log messages and no other's; sampling and elicitation reach the client
  whose call asked and its answers reach the upstream; a client that declared no sampling is not
  asked; a client's refusal reaches the upstream as a refusal.
- `shared`: the default shared connection. Log messages are dropped and the client is never asked
  for sampling; the call that needed it fails.
- `unreachable`: `per_session` on an upstream that cannot open an initialize-era session: the call
  fails with an error that names the server, and the session goes on.
Exits non-zero on the first failed expectation.
"""

import asyncio
import sys

import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared._httpx_utils import create_mcp_http_client

LOGS = ["Tool execution started", "Tool processing data", "Tool execution completed"]


def client(http, url, **kwargs):
    transport = streamable_http_client(url, http_client=http)
    info = types.Implementation(name="portcullis-relay-e2e", version="1.0")
    return Client(transport, mode="legacy", cache=None, client_info=info, **kwargs)


async def per_session(http, url):
    a_logs, b_logs, asked = [], [], []

    async def a_log(params):
        a_logs.append(params.data)

    async def b_log(params):
        b_logs.append(params.data)

    async def sampling(ctx, params):
        text = params.messages[0].content.text
        asked.append(("sampling", text))
        if text == "refuse me":
            return types.ErrorData(code=-1, message="User rejected sampling request")
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled: {text}"),
            model="test-model",
            stop_reason="endTurn",
        )

    async def elicitation(ctx, params):
        asked.append(("elicitation", params.message))
        assert set(params.requested_schema["properties"]) == {"username", "email"}, params
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async with client(http, url, logging_callback=a_log, sampling_callback=sampling,
                      elicitation_callback=elicitation) as a, \
            client(http, url, logging_callback=b_log) as b:
        # Both sessions' calls run at once; each client gets its own three messages, no more.
        ra, rb = await asyncio.gather(
            a.call_tool("fixture__test_tool_with_logging", {}),
            b.call_tool("fixture__test_tool_with_logging", {}),
        )
        assert not ra.is_error and not rb.is_error, (ra, rb)
        await asyncio.sleep(0.3)
        assert a_logs == LOGS, a_logs
        assert b_logs == LOGS, b_logs

        r = await a.call_tool("fixture__test_sampling", {"prompt": "What is 2+2?"})
        assert not r.is_error, r
        assert r.content[0].text == "LLM response: sampled: What is 2+2?", r
        assert asked == [("sampling", "What is 2+2?")], asked

        r = await a.call_tool("fixture__test_elicitation", {"message": "Who are you?"})
        assert not r.is_error, r
        assert '"username":"ada"' in r.content[0].text, r
        assert asked[-1] == ("elicitation", "Who are you?"), asked

        # The client's refusal reaches the upstream, whose tool then fails.
        try:
            await a.call_tool("fixture__test_sampling", {"prompt": "refuse me"})
            raise AssertionError("a refused sampling request let the tool succeed")
        except MCPError as e:
            assert "User rejected sampling request" in str(e), e

        # B declared no sampling: the gateway does not ask it, and the upstream is told so.
        try:
            await b.call_tool("fixture__test_sampling", {"prompt": "never asked"})
            raise AssertionError("a client without sampling was asked to sample")
        except MCPError as e:
            assert "did not declare `sampling`" in str(e), e
        assert ("sampling", "never asked") not in asked, asked
        assert len(asked) == 3, asked


async def shared(http, url):
    logs, asked = [], []

    async def log(params):
        logs.append(params.data)

    async def sampling(ctx, params):
        asked.append(params)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="x"), model="m")

    async with client(http, url, logging_callback=log, sampling_callback=sampling) as c:
        r = await c.call_tool("fixture__test_tool_with_logging", {})
        assert not r.is_error, r
        await asyncio.sleep(0.3)
        assert logs == [], logs
        try:
            await c.call_tool("fixture__test_sampling", {"prompt": "hello"})
            raise AssertionError("sampling was relayed over a shared connection")
        except MCPError as e:
            assert "fixture" in str(e), e
        assert asked == [], asked


async def unreachable(http, url):
    async with client(http, url) as c:
        tools = [t.name for t in (await c.list_tools()).tools]
        assert "fixture__echo" in tools, tools
        for _ in range(2):
            try:
                await c.call_tool("fixture__echo", {"text": "hi"})
                raise AssertionError("the call ran without the session's upstream connection")
            except MCPError as e:
                assert "upstream `fixture`" in str(e), e
        await c.send_ping()


async def main(url: str, key: str, mode: str) -> None:
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {key}"}) as http:
        await {"per_session": per_session, "shared": shared, "unreachable": unreachable}[mode](http, url)
    print(f"session relay {mode}: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
