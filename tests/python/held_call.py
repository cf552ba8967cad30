"""A write call held for approval, through the official MCP Python SDK with a short read timeout.

Usage: held_call.py URL KEY MODE READ_TIMEOUT_S (0: the SDK's default). Calls `fixture__slow` (a write tool) and prints
one JSON line: {"result": text} when it ran, or {"error": message, "data": data} when it was
refused; a transport timeout is printed as {"timeout": ...} and exits 1.
"""

import asyncio
import json
import sys

import httpx2
import mcp.types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


async def main(url: str, key: str, mode: str, read_timeout: float) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    # 0: the SDK's own default timeouts.
    timeout = httpx2.Timeout(30.0, read=read_timeout) if read_timeout > 0 else None
    async with create_mcp_http_client(headers=headers, timeout=timeout) as http:
        transport = streamable_http_client(url, http_client=http)
        info = types.Implementation(name="portcullis-held", version="1.0")
        async with Client(transport, mode=mode, cache=None, client_info=info) as c:
            try:
                r = await c.call_tool("fixture__slow", {"ms": 0})
            except Exception as e:  # McpError for a JSON-RPC error, httpx2 errors for timeouts
                error = getattr(e, "error", None)
                if error is None:
                    print(json.dumps({"timeout": f"{type(e).__name__}: {e}"}))
                    return 1
                print(json.dumps({"error": error.message, "code": error.code, "data": error.data}))
                return 0
            print(json.dumps({"result": r.content[0].text, "is_error": r.is_error}))
            return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))))
