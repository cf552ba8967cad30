"""An upstream written with the official MCP Python SDK, for the benchmark: one tool, `echo`,
served over Streamable HTTP as the SDK's `run(transport="streamable-http")` serves it
(stateful, answers on SSE, uvicorn binding its own socket), on 127.0.0.1 at a free port.

With `--tls DIR` it serves HTTPS instead, for the TLS tests: a certificate authority made now
(`DIR/ca.pem`, the file a client must trust) signs a certificate for `localhost`, and the URL
names `localhost`.

Prints `bench upstream listening on URL` once it serves.
"""

import asyncio
import datetime
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer("bench-upstream", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Answer `text` as it came."""
    return text


def certificates(folder):
    """Write a new CA (`ca.pem`) and a `localhost` certificate it signed (`leaf.pem`,
    `leaf.key`) into `folder`; the leaf's paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("portcullis test CA"))
        .issuer_name(name("portcullis test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    with open(os.path.join(folder, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    cert_path, key_path = os.path.join(folder, "leaf.pem"), os.path.join(folder, "leaf.key")
    with open(cert_path, "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


async def main():
    tls = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--tls" else None
    # A free port, then uvicorn binds it itself as the SDK's `run` has it do. (Handed a bound
    # socket instead, uvicorn's connections go without TCP_NODELAY, and every answer on a reused
    # connection waits for the client's delayed ACK: 40 ms that a real deployment does not see.)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    app = server.streamable_http_app()
    extra = {}
    url = f"http://127.0.0.1:{port}/mcp"
    if tls:
        cert, key = certificates(tls)
        extra = {"ssl_certfile": cert, "ssl_keyfile": key}
        url = f"https://localhost:{port}/mcp"
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **extra
    )
    serving = uvicorn.Server(config)

    async def announce():
        while not serving.started:
            await asyncio.sleep(0.02)
        print(f"bench upstream listening on {url}", flush=True)

    await asyncio.gather(serving.serve(), announce())


asyncio.run(main())
