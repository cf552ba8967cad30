"""An upstream written with the official MCP Python SDK, for the benchmark: one tool, `echo`,
served over Streamable HTTP as the SDK's `run(transport="streamable-http")` serves it
(stateful, answers on SSE, uvicorn binding its own socket), on 127.0.0.1 at a free port.

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
    # A free port, then uvicorn binds it itself as the SDK's `run` has it do. (Handed a bound
    # socket instead, uvicorn's connections go without TCP_NODELAY, and every answer on a reused
    # connection waits for the client's delayed ACK: 40 ms that a real deployment does not see.)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    app = server.streamable_http_app()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    serving = uvicorn.Server(config)

    async def announce():
        while not serving.started:
            await asyncio.sleep(0.02)
        print(f"bench upstream listening on http://127.0.0.1:{port}/mcp", flush=True)

    await asyncio.gather(serving.serve(), announce())


asyncio.run(main())
