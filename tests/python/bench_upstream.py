"""An upstream written with the official MCP Python SDK, for the benchmark: one tool, `echo`,
served over Streamable HTTP as the SDK serves it by default (stateful, answers on SSE), by
uvicorn on 127.0.0.1 at a free port.

Prints `bench upstream listening on URL` once it serves.
"""

import asyncio
import socket

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("bench-upstream", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Answer `text` as it came."""
    return text


async def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    print(f"bench upstream listening on http://127.0.0.1:{port}/mcp", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


asyncio.run(main())
