//! Link codec tests: every kind round trips through [`LinkEncoder`] and [`decode_frame`];
//! corrupt, truncated and oversized input is rejected (or waited for) without panicking.

use proptest::prelude::*;
use zerocopy::FromBytes;

use super::*;

fn pos(partition: u32, epoch: u64, seq: u64) -> Position {
    Position::new(partition, epoch, seq)
}

/// Decodes exactly one frame that fills `buf`.
fn decode_one(buf: &[u8]) -> LinkFrame<'_> {
    let (frame, used) = decode_frame(buf, &LinkLimits::default()).unwrap().unwrap();
    assert_eq!(used, buf.len());
    frame
}

/// Appends one frame built by `f` to `frames`.
fn build<F>(enc: &mut LinkEncoder, frames: &mut Vec<Vec<u8>>, f: F)
where
    F: FnOnce(&mut LinkEncoder, &mut Vec<u8>) -> Result<(), FrameTooLarge>,
{
    let mut out = Vec::new();
    f(enc, &mut out).unwrap();
    frames.push(out);
}

/// One frame of every kind, in `Kind` order, with `request_id == kind`.
fn one_of_each() -> Vec<Vec<u8>> {
    let (e, f) = (&mut LinkEncoder::default(), &mut Vec::new());
    build(e, f, |e, o| {
        e.hello(o, 1, "edge-a", 3, 9, Some(&super::auth::Nonce([1; 32])))
    });
    build(e, f, |e, o| e.hello_ack(o, 2, "store-1", 9, 64));
    build(e, f, |e, o| e.ping(o, 3, 77));
    build(e, f, |e, o| e.pong(o, 4, 77));
    build(e, f, |e, o| {
        e.error(o, 5, ErrorCode::Conflict, "version mismatch", 9, 12)
    });
    build(e, f, |e, o| e.get(o, 6, "room/{42}/title"));
    build(e, f, |e, o| {
        e.get_reply(o, 7, "k", Some(b"\"v\""), 17, pos(3, 1, 99))
    });
    let msg = Some(MsgIdRef {
        scope: "alice",
        id: "m-1",
    });
    build(e, f, |e, o| e.put(o, 8, "k", b"{\"a\":1}", Some(17), msg));
    build(e, f, |e, o| e.delete(o, 9, "k", None, None));
    build(e, f, |e, o| e.publish(o, 10, "room/{42}/chat", b"hi", msg));
    build(e, f, |e, o| e.write_reply(o, 11, pos(3, 1, 100), 18));
    build(e, f, |e, o| {
        e.watch(o, 12, 500, "room/{42}/", true, Some(pos(3, 1, 90)))
    });
    build(e, f, |e, o| e.unwatch(o, 13, 500));
    build(e, f, |e, o| {
        let entries = [
            EntryRef {
                key: "room/{42}/a",
                value: b"1",
                version: 4,
            },
            EntryRef {
                key: "room/{42}/b",
                value: b"",
                version: 5,
            },
        ];
        e.snapshot(o, 14, 500, 3, &entries, pos(3, 1, 100), true)
    });
    build(e, f, |e, o| {
        let changes = [
            ChangeRef {
                watch_ids: &[500, 501],
                position: pos(3, 1, 101),
                key: "room/{42}/a",
                kind: ChangeKind::Put,
                value: Some(b"2"),
                version: 6,
            },
            ChangeRef {
                watch_ids: &[500],
                position: pos(3, 1, 102),
                key: "room/{42}/b",
                kind: ChangeKind::Delete,
                value: None,
                version: 7,
            },
        ];
        e.changes(o, 15, &changes)
    });
    build(e, f, |e, o| e.resumed(o, 16, 500, 3));
    build(e, f, |e, o| e.reset(o, 17, 500, 3, 2, "log truncated"));
    build(e, f, |e, o| {
        e.auth_challenge(
            o,
            18,
            &super::auth::Nonce([2; 32]),
            &super::auth::Proof([3; 32]),
        )
    });
    build(e, f, |e, o| {
        e.auth_proof(o, 19, &super::auth::Proof([4; 32]))
    });
    build(e, f, |e, o| {
        e.members(o, 20, "@presence/{a}/1:a", Some("k"), 1000)
    });
    let member = [EntryRef {
        key: "@presence/{a}/1:a0:9:c:e/0/1.1",
        value: b"{}",
        version: 0,
    }];
    build(e, f, |e, o| e.members_reply(o, 21, &member, 7, true));
    build(e, f, |e, o| {
        e.presence_sync(o, 22, &member, &["e/0/1.1"], true)
    });
    std::mem::take(f)
}

/// Whether the fields of `message` are those `one_of_each` built it with.
fn fields_as_built(message: &LinkMessage<'_>) -> bool {
    match *message {
        LinkMessage::Hello(m) => {
            m.edge_id() == Some("edge-a")
                && m.worker() == 3
                && m.map_version() == 9
                && m.nonce().map(|n| n.bytes()) == Some([1u8; 32].as_slice())
        }
        LinkMessage::HelloAck(m) => {
            m.store_id() == Some("store-1") && m.map_version() == 9 && m.partitions() == 64
        }
        LinkMessage::Ping(m) => m.nonce() == 77,
        LinkMessage::Pong(m) => m.nonce() == 77,
        LinkMessage::Error(m) => {
            m.code() == ErrorCode::Conflict
                && m.message() == Some("version mismatch")
                && m.map_version() == 9
                && m.current_version() == 12
        }
        LinkMessage::Get(m) => m.key() == "room/{42}/title",
        LinkMessage::GetReply(m) => {
            m.key() == "k"
                && m.found()
                && m.version() == 17
                && m.value().map(|v| v.bytes()) == Some(b"\"v\"".as_slice())
                && m.position() == Some(&pos(3, 1, 99))
        }
        LinkMessage::Put(m) => {
            m.key() == "k"
                && m.value().map(|v| v.bytes()) == Some(b"{\"a\":1}".as_slice())
                && m.if_version() == Some(17)
                && (m.msg_id(), m.msg_scope()) == (Some("m-1"), Some("alice"))
        }
        LinkMessage::Delete(m) => {
            m.key() == "k" && m.if_version().is_none() && m.msg_id().is_none()
        }
        LinkMessage::Publish(m) => {
            m.key() == "room/{42}/chat"
                && m.value().map(|v| v.bytes()) == Some(b"hi".as_slice())
                && (m.msg_id(), m.msg_scope()) == (Some("m-1"), Some("alice"))
        }
        LinkMessage::WriteReply(m) => m.position() == Some(&pos(3, 1, 100)) && m.version() == 18,
        LinkMessage::Watch(m) => {
            m.watch_id() == 500
                && m.key() == "room/{42}/"
                && m.prefix()
                && m.from() == Some(&pos(3, 1, 90))
        }
        LinkMessage::Unwatch(m) => m.watch_id() == 500,
        LinkMessage::Snapshot(m) => {
            let entries: Vec<_> = m
                .entries()
                .unwrap()
                .iter()
                .map(|e| (e.key(), e.value().unwrap().bytes(), e.version()))
                .collect();
            m.watch_id() == 500
                && m.partition() == 3
                && m.position() == Some(&pos(3, 1, 100))
                && m.more()
                && entries
                    == [
                        ("room/{42}/a", b"1".as_slice(), 4),
                        ("room/{42}/b", b"".as_slice(), 5),
                    ]
        }
        LinkMessage::Changes(m) => {
            let changes: Vec<_> = m.changes().unwrap().iter().collect();
            let (a, b) = (changes[0], changes[1]);
            changes.len() == 2
                && a.watch_ids().unwrap().iter().collect::<Vec<_>>() == [500, 501]
                && a.position() == Some(&pos(3, 1, 101))
                && a.key() == "room/{42}/a"
                && a.kind() == ChangeKind::Put
                && a.value().unwrap().bytes() == b"2"
                && a.version() == 6
                && b.kind() == ChangeKind::Delete
                && b.value().is_none()
                && b.version() == 7
        }
        LinkMessage::Resumed(m) => m.watch_id() == 500 && m.partition() == 3,
        LinkMessage::Reset(m) => {
            m.watch_id() == 500
                && m.partition() == 3
                && m.epoch() == 2
                && m.reason() == Some("log truncated")
        }
        LinkMessage::AuthChallenge(m) => {
            m.nonce().bytes() == [2u8; 32] && m.proof().bytes() == [3u8; 32]
        }
        LinkMessage::AuthProof(m) => m.proof().bytes() == [4u8; 32],
        LinkMessage::Members(m) => {
            m.prefix() == "@presence/{a}/1:a" && m.after() == Some("k") && m.limit() == 1000
        }
        LinkMessage::MembersReply(m) => m.total() == 7 && m.more() && one_member(m.entries()),
        LinkMessage::PresenceSync(m) => {
            m.last()
                && one_member(m.entries())
                && m.owners().map(|o| o.iter().collect::<Vec<_>>()) == Some(vec!["e/0/1.1"])
        }
    }
}

/// Whether `entries` is the one member `one_of_each` builds.
fn one_member(
    entries: Option<
        flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<super::internal::Entry<'_>>>,
    >,
) -> bool {
    let got: Vec<_> = entries
        .into_iter()
        .flatten()
        .map(|e| (e.key(), e.value().map(|v| v.bytes())))
        .collect();
    got == [("@presence/{a}/1:a0:9:c:e/0/1.1", Some(b"{}".as_slice()))]
}

#[test]
fn every_kind_round_trips() {
    let frames = one_of_each();
    assert_eq!(frames.len(), Kind::ENUM_VALUES.len());
    for (buf, kind) in frames.iter().zip(Kind::ENUM_VALUES) {
        let frame = decode_one(buf);
        assert_eq!(frame.message.kind(), *kind);
        assert_eq!(frame.request_id, u64::from(kind.0));
        assert_eq!(frame.flags, 0);
    }
    let field_checks: Vec<bool> = frames
        .iter()
        .map(|buf| fields_as_built(&decode_one(buf).message))
        .collect();
    assert!(field_checks.iter().all(|&ok| ok), "{field_checks:?}");
}

#[test]
fn frames_decode_back_to_back() {
    let frames = one_of_each();
    let stream: Vec<u8> = frames.concat();
    let mut rest = stream.as_slice();
    let mut kinds = Vec::new();
    while let Some((frame, used)) = decode_frame(rest, &LinkLimits::default()).unwrap() {
        kinds.push(frame.message.kind());
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(kinds, Kind::ENUM_VALUES);
}

#[test]
fn truncated_input_needs_more_at_every_length() {
    for buf in one_of_each() {
        for len in 0..buf.len() {
            assert_eq!(
                decode_frame(&buf[..len], &LinkLimits::default()),
                Ok(None),
                "len {len}"
            );
        }
    }
}

#[test]
fn every_single_byte_header_corruption_is_rejected_or_valid() {
    for buf in one_of_each() {
        for at in 0..HEADER_LEN {
            for byte in 0..=u8::MAX {
                let mut bad = buf.clone();
                bad[at] = byte;
                match decode_frame(&bad, &LinkLimits::default()) {
                    // Still a frame (another request id or flags, a kind whose table happens
                    // to verify, a shorter length that cuts only padding): it must then be
                    // consistent with its header.
                    Ok(Some((frame, used))) => {
                        let header = LinkHeader::read_from_prefix(&bad).unwrap().0;
                        assert_eq!(used, HEADER_LEN + header.payload_len.get() as usize);
                        assert_eq!(frame.message.kind().0, header.kind);
                        assert_eq!(frame.request_id, header.request_id.get());
                    }
                    // A larger payload_len: waits for more.
                    Ok(None) => assert!((8..12).contains(&at)),
                    Err(err) => assert!(err.is_fatal()),
                }
            }
        }
    }
}

#[test]
fn every_single_byte_payload_corruption_never_panics() {
    for buf in one_of_each() {
        for at in HEADER_LEN..buf.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff] {
                let mut bad = buf.clone();
                bad[at] = byte;
                if let Ok(Some((frame, _))) = decode_frame(&bad, &LinkLimits::default()) {
                    // Verified: reading every field must be safe.
                    let _ = format!("{frame:?}");
                }
            }
        }
    }
}

#[test]
fn oversized_length_fails_from_the_header_alone() {
    let limits = LinkLimits {
        max_frame: 1024,
        ..LinkLimits::default()
    };
    let header = LinkHeader::new(Kind::Put, 0, 1, 1024 - HEADER_LEN as u32 + 1);
    let err = decode_frame(zerocopy::IntoBytes::as_bytes(&header), &limits).unwrap_err();
    assert_eq!(
        err,
        LinkError::FrameTooLarge {
            len: 1025,
            max: 1024
        }
    );

    let header = LinkHeader::new(Kind::Put, 0, 1, u32::MAX);
    let err = decode_frame(
        zerocopy::IntoBytes::as_bytes(&header),
        &LinkLimits::default(),
    );
    assert!(matches!(err, Err(LinkError::FrameTooLarge { .. })));

    // Exactly at the limit: waits for the payload.
    let header = LinkHeader::new(Kind::Put, 0, 1, 1024 - HEADER_LEN as u32);
    assert_eq!(
        decode_frame(zerocopy::IntoBytes::as_bytes(&header), &limits),
        Ok(None)
    );
}

#[test]
fn encoder_refuses_frames_over_the_limit() {
    let mut enc = LinkEncoder::new(&LinkLimits {
        max_frame: 256,
        ..LinkLimits::default()
    });
    let mut out = b"keep".to_vec();
    let err = enc
        .put(&mut out, 1, "k", &[7; 300], None, None)
        .unwrap_err();
    assert_eq!(err.max, 256);
    assert!(err.len > 300);
    assert_eq!(out, b"keep");
    // The encoder is still usable afterwards.
    enc.put(&mut out, 2, "k", b"small", None, None).unwrap();
    assert_eq!(decode_one(&out[4..]).request_id, 2);

    let err = encode_frame(&mut out, Kind::Ping, 0, 1, &[0; 64], 32).unwrap_err();
    assert_eq!(err, FrameTooLarge { len: 84, max: 32 });
}

#[test]
fn garbage_payload_fails_verification() {
    for payload in [
        &b""[..],
        b"\0\0\0\0",
        b"\xff\xff\xff\xff\0\0\0\0",
        &[0x41; 64],
    ] {
        let mut buf = Vec::new();
        encode_frame(&mut buf, Kind::Watch, 0, 1, payload, usize::MAX).unwrap();
        let err = decode_frame(&buf, &LinkLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                LinkError::InvalidPayload {
                    kind: Kind::Watch,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn missing_required_key_fails_verification() {
    // A Ping payload is a valid table with no `key`; as a Get it must be rejected.
    let mut ping = Vec::new();
    LinkEncoder::default().ping(&mut ping, 1, 5).unwrap();
    ping[3] = Kind::Get.0;
    let err = decode_frame(&ping, &LinkLimits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            LinkError::InvalidPayload {
                kind: Kind::Get,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn flags_pass_through() {
    let mut payload_buf = Vec::new();
    LinkEncoder::default().ping(&mut payload_buf, 1, 5).unwrap();
    let mut buf = Vec::new();
    encode_frame(
        &mut buf,
        Kind::Ping,
        0x81,
        42,
        &payload_buf[HEADER_LEN..],
        1 << 20,
    )
    .unwrap();
    let frame = decode_one(&buf);
    assert_eq!((frame.flags, frame.request_id), (0x81, 42));
    assert!(matches!(frame.message, LinkMessage::Ping(p) if p.nonce() == 5));
}

#[test]
fn large_batches_of_small_tables_verify() {
    let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
    let changes: Vec<ChangeRef<'_>> = keys
        .iter()
        .map(|key| ChangeRef {
            watch_ids: &[1],
            position: pos(0, 0, 0),
            key,
            kind: ChangeKind::Delete,
            value: None,
            version: 0,
        })
        .collect();
    let mut out = Vec::new();
    LinkEncoder::default()
        .changes(&mut out, 1, &changes)
        .unwrap();
    let LinkMessage::Changes(m) = decode_one(&out).message else {
        panic!("not Changes")
    };
    assert_eq!(m.changes().unwrap().len(), 20_000);

    let entries: Vec<EntryRef<'_>> = keys
        .iter()
        .map(|key| EntryRef {
            key,
            value: b"",
            version: 0,
        })
        .collect();
    out.clear();
    LinkEncoder::default()
        .snapshot(&mut out, 1, 1, 0, &entries, pos(0, 0, 0), false)
        .unwrap();
    let LinkMessage::Snapshot(m) = decode_one(&out).message else {
        panic!("not Snapshot")
    };
    assert_eq!(m.entries().unwrap().len(), 20_000);
}

#[test]
fn table_count_limit_applies() {
    let entries = vec![
        EntryRef {
            key: "k",
            value: b"v",
            version: 1
        };
        100
    ];
    let mut out = Vec::new();
    LinkEncoder::default()
        .snapshot(&mut out, 1, 1, 0, &entries, pos(0, 0, 0), false)
        .unwrap();
    let limits = LinkLimits {
        max_tables: 50,
        ..LinkLimits::default()
    };
    let err = decode_frame(&out, &limits).unwrap_err();
    assert!(matches!(err, LinkError::InvalidPayload { .. }));
}

proptest! {
    #[test]
    fn put_round_trips_split_anywhere(
        request_id in any::<u64>(),
        key in "\\PC{1,40}",
        value in proptest::collection::vec(any::<u8>(), 0..300),
        if_version in proptest::option::of(any::<u64>()),
        split in any::<prop::sample::Index>(),
    ) {
        let mut buf = Vec::new();
        LinkEncoder::default().put(&mut buf, request_id, &key, &value, if_version, None).unwrap();
        let split = split.index(buf.len() + 1);
        let limits = LinkLimits::default();
        if split < buf.len() {
            prop_assert_eq!(decode_frame(&buf[..split], &limits), Ok(None));
        }
        let (frame, used) = decode_frame(&buf, &limits).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(frame.request_id, request_id);
        let LinkMessage::Put(put) = frame.message else { panic!("not a Put") };
        prop_assert_eq!(put.key(), key.as_str());
        prop_assert_eq!(put.value().map(|v| v.bytes()), Some(value.as_slice()));
        prop_assert_eq!(put.if_version(), if_version);
    }

    #[test]
    fn changes_round_trip(
        request_id in any::<u64>(),
        changes in proptest::collection::vec(
            (
                proptest::collection::vec(any::<u64>(), 0..4),
                (any::<u32>(), any::<u64>(), any::<u64>()),
                "\\PC{1,20}",
                0u8..3,
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                any::<u64>(),
            ),
            0..20,
        ),
    ) {
        let refs: Vec<ChangeRef<'_>> = changes
            .iter()
            .map(|(ids, (p, e, s), key, kind, value, version)| ChangeRef {
                watch_ids: ids,
                position: pos(*p, *e, *s),
                key,
                kind: ChangeKind(*kind),
                value: value.as_deref(),
                version: *version,
            })
            .collect();
        let mut buf = Vec::new();
        LinkEncoder::default().changes(&mut buf, request_id, &refs).unwrap();
        let frame = decode_one(&buf);
        prop_assert_eq!(frame.request_id, request_id);
        let LinkMessage::Changes(m) = frame.message else { panic!("not Changes") };
        let decoded: Vec<ChangeRef<'_>> = m
            .changes()
            .unwrap()
            .iter()
            .map(|c| ChangeRef {
                watch_ids: &[],
                position: *c.position().unwrap(),
                key: c.key(),
                kind: c.kind(),
                value: c.value().map(|v| v.bytes()),
                version: c.version(),
            })
            .collect();
        prop_assert_eq!(decoded.len(), refs.len());
        for ((got, want), c) in decoded.iter().zip(&refs).zip(m.changes().unwrap().iter()) {
            prop_assert_eq!(&ChangeRef { watch_ids: want.watch_ids, ..*got }, want);
            let ids: Vec<u64> = c.watch_ids().unwrap().iter().collect();
            prop_assert_eq!(ids.as_slice(), want.watch_ids);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_frame(&buf, &LinkLimits::default());
        // Also with a valid header in front, so the verifier sees the random payload.
        for kind in Kind::ENUM_VALUES {
            let mut framed = Vec::new();
            encode_frame(&mut framed, *kind, 0, 0, &buf, usize::MAX).unwrap();
            if let Ok(Some((frame, _))) = decode_frame(&framed, &LinkLimits::default()) {
                let _ = format!("{frame:?}");
            }
        }
    }
}
