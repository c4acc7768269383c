"""Python `websockets` against the edge's /echo: text, binary, a fragmented
message, ping/pong, and a clean close. Exit 0 when every echo matches."""
import sys

from websockets.sync.client import connect

url = sys.argv[1]
with connect(url, max_size=2**24) as ws:
    ws.send("héllo from python")
    assert ws.recv() == "héllo from python"
    blob = bytes(range(256)) * 300
    ws.send(blob)
    assert ws.recv() == blob
    ws.send(["frag", "ment", "ed"])  # one message in three frames
    assert ws.recv() == "fragmented"
    ws.ping(b"p").wait(5)
    for i in range(200):
        ws.send(f"m{i}")
    for i in range(200):
        assert ws.recv() == f"m{i}"
    ws.close(1000, "done")
    assert ws.close_code == 1000, ws.close_code
print("python websockets: ok")
