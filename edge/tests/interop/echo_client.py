"""Python `websockets` against the edge's /echo: text, binary, a fragmented
message, a ping that must get its matching pong, and a clean close. Exit 0 when
every echo matches. A `wss://` URL is checked against the CA in $RINGLINE_CA."""
import os
import signal
import ssl
import sys

from websockets.sync.client import connect

url = sys.argv[1]
tls = None
timeouts = {}
if url.startswith("wss://"):
    tls = ssl.create_default_context(cafile=os.environ["RINGLINE_CA"])
    # websockets' sync client changes the socket's timeout from one thread (opening,
    # closing) while its reader thread is inside an SSL read; a record read in two
    # pieces then fails with "The read operation timed out" (seen against any TLS
    # server, fastwebsockets + tokio-rustls too). Without those timeouts it never
    # changes them; the alarm below bounds the whole run instead.
    timeouts = {"open_timeout": None, "close_timeout": None}
    signal.alarm(30)
with connect(url, max_size=2**24, ssl=tls, **timeouts) as ws:
    ws.send("héllo from python")
    assert ws.recv() == "héllo from python"
    blob = bytes(range(256)) * 300
    ws.send(blob)
    assert ws.recv() == blob
    ws.send(["frag", "ment", "ed"])  # one message in three frames
    assert ws.recv() == "fragmented"
    # The event is set only by a pong carrying this ping's payload; a missing or
    # mismatched pong leaves it unset and fails here.
    assert ws.ping(b"ping from python").wait(10), "no matching pong within 10 s"
    for i in range(200):
        ws.send(f"m{i}")
    for i in range(200):
        assert ws.recv() == f"m{i}"
    ws.close(1000, "done")
    assert ws.close_code == 1000, ws.close_code
print("python websockets: ok")
