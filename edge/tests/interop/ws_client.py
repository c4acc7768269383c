"""Python `websockets` against the edge's /ws client protocol (ringline.v1.json):
subscribe, ping (the matching pong must come), write from a second connection,
receive every change in order, get, publish, then leave, miss some writes, and
resume with the last token to receive exactly the missed changes. Exit 0 when every
check holds."""
import json
import os
import sys

from websockets.sync.client import connect

url = sys.argv[1]
key = "py/{chat}/title"


def call(ws, msg):
    ws.send(json.dumps(msg))
    return json.loads(ws.recv(timeout=10))


with connect(url, subprotocols=["ringline.v1.json"]) as a, \
        connect(url, subprotocols=["ringline.v1.json"]) as w:
    assert a.subprotocol == "ringline.v1.json", a.subprotocol
    # With compression on in the edge (the tests say so), it must have been agreed.
    ext = a.response.headers.get("Sec-WebSocket-Extensions", "")
    assert ("permessage-deflate" in ext) == bool(os.environ.get("RINGLINE_EXPECT_DEFLATE")), ext
    snap = call(a, {"op": "sub", "id": 1, "key": key})
    assert snap["op"] == "snapshot" and snap["id"] == 1, snap
    # Set only by a pong carrying this payload: a missing or mismatched pong fails.
    assert a.ping(b"ping on /ws").wait(10), "no matching pong within 10 s"
    for n in range(1, 21):
        ok = call(w, {"op": "put", "id": n, "key": key, "value": {"n": n, "s": "é"}})
        assert ok["op"] == "ok" and ok["id"] == n, ok
    token = None
    for n in range(1, 21):
        ch = json.loads(a.recv(timeout=10))
        assert ch["op"] == "change" and ch["id"] == 1, ch
        assert ch["value"] == {"n": n, "s": "é"}, ch
        token = ch["token"]
    got = call(w, {"op": "get", "id": 100, "key": key})
    assert got["op"] == "value" and got["value"] == {"n": 20, "s": "é"}, got
    assert call(w, {"op": "pub", "id": 101, "key": key, "value": "hi"})["op"] == "ok"
    ch = json.loads(a.recv(timeout=10))
    assert ch.get("pub") is True and ch["value"] == "hi", ch
    token = ch["token"]
    bad = call(w, {"op": "nope", "id": 102})
    assert bad["op"] == "error" and bad["code"] == "bad_request", bad

with connect(url, subprotocols=["ringline.v1.json"]) as w:
    for n in range(21, 26):
        assert call(w, {"op": "put", "id": n, "key": key, "value": n})["op"] == "ok"

with connect(url, subprotocols=["ringline.v1.json"]) as a:
    r = call(a, {"op": "sub", "id": 9, "key": key, "from": token})
    assert r["op"] == "resumed" and r["id"] == 9, r
    for n in range(21, 26):
        ch = json.loads(a.recv(timeout=10))
        assert ch["op"] == "change" and ch["value"] == n, ch
    a.close(1000, "done")
print("python websockets /ws: ok")
