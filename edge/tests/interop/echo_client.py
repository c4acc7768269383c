"""Python `websockets` against the edge's /echo: text, binary, a fragmented
message, a ping that must get its matching pong, and a clean close. Exit 0 when
every echo matches. A `wss://` URL is checked against the CA in $RINGLINE_CA.

The asyncio client, not the threaded one: the threaded client reads a TLS socket in
one thread while another writes it and changes its timeout, which OpenSSL does not
support (seen failing against any TLS server, fastwebsockets + tokio-rustls too: a
close frame or a handshake response lost). The asyncio client touches its socket
from one thread."""
import asyncio
import os
import ssl
import sys

from websockets.asyncio.client import connect

# Set by the tests that run against an edge with compression on: the handshake must
# have agreed permessage-deflate (websockets offers it by default).
EXPECT_DEFLATE = bool(os.environ.get("RINGLINE_EXPECT_DEFLATE"))


async def main(url: str) -> None:
    tls = None
    if url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=os.environ["RINGLINE_CA"])
    async with connect(url, max_size=2**24, ssl=tls) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ("permessage-deflate" in ext) == EXPECT_DEFLATE, ext
        await ws.send("héllo from python")
        assert await ws.recv() == "héllo from python"
        blob = bytes(range(256)) * 300
        await ws.send(blob)
        assert await ws.recv() == blob
        await ws.send(["frag", "ment", "ed"])  # one message in three frames
        assert await ws.recv() == "fragmented"
        # Resolved only by a pong carrying this ping's payload; a missing or
        # mismatched pong leaves it pending and fails here.
        pong = await ws.ping(b"ping from python")
        await asyncio.wait_for(pong, 10)
        for i in range(200):
            await ws.send(f"m{i}")
        for i in range(200):
            assert await ws.recv() == f"m{i}"
        await ws.close(1000, "done")
        assert ws.close_code == 1000, ws.close_code


asyncio.run(asyncio.wait_for(main(sys.argv[1]), 30))
print("python websockets: ok")
