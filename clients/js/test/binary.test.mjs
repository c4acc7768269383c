// The binary form's codec (src/binary.ts) against flatc's own generated readers and
// builders: a request reads back field by field; responses built the way the edge
// builds them decode to the JSON form's message objects.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as flatbuffers from "flatbuffers";
import { encodeRequest, decodeResponse } from "../dist/binary.js";
import { Change, ChangeKind, Error as FbError, Op, Put, Reply, Request, Response, Sub, SubMode } from "../dist/generated/ringline/client.js";

test("a put and a sub read back field by field", () => {
  const put = Request.getRootAsRequest(new flatbuffers.ByteBuffer(encodeRequest({ op: "put", id: 5, key: "k", value: new Uint8Array([1, 2]), if_version: 3, msg_id: "m" })));
  assert.equal(put.id(), 5n);
  assert.equal(put.opType(), Op.Put);
  const p = put.op(new Put());
  assert.deepEqual([p.key(), [...p.valueArray()], p.ifVersion(), p.msgId()], ["k", [1, 2], 3n, "m"]);
  // A string travels as its UTF-8, any other value as its JSON text.
  const text = Request.getRootAsRequest(new flatbuffers.ByteBuffer(encodeRequest({ op: "put", id: 6, key: "k", value: { a: 1 } }))).op(new Put());
  assert.equal(new TextDecoder().decode(text.valueArray()), '{"a":1}');
  assert.equal(text.ifVersion(), null);
  const sub = Request.getRootAsRequest(new flatbuffers.ByteBuffer(encodeRequest({ op: "sub", id: 7, prefix: "room/", from: "tok", mode: "latest" }))).op(new Sub());
  assert.deepEqual([sub.key(), sub.prefix(), sub.from(), sub.mode()], [null, "room/", "tok", SubMode.Latest]);
  assert.throws(() => encodeRequest({ op: "nonsense", id: 1 }), TypeError);
});

function response(id, type, build) {
  const b = new flatbuffers.Builder(64);
  const body = build(b);
  b.finish(Response.createResponse(b, id === null ? null : BigInt(id), type, body));
  return b.asUint8Array();
}

test("responses decode to the JSON form's objects", () => {
  const change = response(9, Reply.Change, (b) => {
    const [key, token] = [b.createString("k"), b.createString("t")];
    return Change.createChange(b, key, ChangeKind.Put, Change.createValueVector(b, new Uint8Array([7])), 4n, token);
  });
  const m = decodeResponse(change);
  assert.deepEqual({ ...m, value: [...m.value] }, { op: "change", id: 9, key: "k", value: [7], version: 4, token: "t" });
  const del = decodeResponse(response(9, Reply.Change, (b) => Change.createChange(b, b.createString("k"), ChangeKind.Delete, 0, 5n, b.createString("t"))));
  assert.deepEqual(del, { op: "change", id: 9, key: "k", version: 5, deleted: true, token: "t" });
  const err = decodeResponse(response(3, Reply.Error, (b) => FbError.createError(b, b.createString("conflict"), b.createString("no"), 2n)));
  assert.deepEqual(err, { op: "error", id: 3, code: "conflict", message: "no", version: 2 });
  assert.equal(decodeResponse(new Uint8Array([1, 2, 3])), undefined);
});
