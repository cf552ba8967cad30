"""Drive the gateway with the official MCP Python SDK (PyPI `mcp`).

Usage: client_e2e.py URL KEY MODE, where MODE is `legacy` (initialize era) or `2026-07-28`
(server/discover era). Exits non-zero on the first failed expectation.
"""

import asyncio
import sys

import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, key: str, mode: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        info = types.Implementation(name="portcullis-e2e", version="1.0")
        async with Client(transport, mode=mode, cache=None, client_info=info) as c:
            want = "2026-07-28" if mode == "2026-07-28" else "2025-11-25"
            assert c.protocol_version == want, c.protocol_version
            assert c.server_info is None or c.server_info.name == "portcullis", c.server_info

            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert "fixture__echo" in tools, sorted(tools)
            assert "fixture__unlisted_tool" not in tools, sorted(tools)
            assert tools["fixture__echo"].annotations.read_only_hint is True
            assert tools["fixture__add_tool"].annotations.destructive_hint is True

            r = await c.call_tool("fixture__echo", {"text": "hello through the gate"})
            assert not r.is_error and r.content[0].text == "hello through the gate", r

            seen = []

            async def progress(p, total, message):
                seen.append((p, total))

            r = await c.call_tool("fixture__test_tool_with_progress", {}, progress_callback=progress)
            assert not r.is_error, r
            assert len(seen) >= 3 and [p for p, _ in seen] == sorted(p for p, _ in seen), seen

            r = await c.call_tool("fixture__test_error_handling", {})
            assert r.is_error, r

            try:
                await c.call_tool("fixture__unlisted_tool", {})
                raise AssertionError("unlisted tool was callable")
            except Exception as e:  # the SDK raises McpError for JSON-RPC errors
                assert "Unknown tool" in str(e), e

            uris = [str(x.uri) for x in (await c.list_resources()).resources]
            assert "fixture+test://static-text" in uris, uris
            assert not any(u.startswith("fixture+secret") for u in uris), uris
            contents = (await c.read_resource("fixture+test://static-text")).contents
            assert contents[0].text == "This is the content of the static text resource.", contents

            prompts = [p.name for p in (await c.list_prompts()).prompts]
            assert "fixture__test_simple_prompt" in prompts, prompts
            got = await c.get_prompt("fixture__test_prompt_with_arguments", {"arg1": "a1", "arg2": "b2"})
            assert "arg1='a1'" in got.messages[0].content.text, got

            if mode == "legacy":
                await c.send_ping()
    print(f"python sdk {mode}: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
