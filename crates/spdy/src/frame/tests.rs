use super::*;

/// Two SYN_STREAMs written by moby/spdystream's Framer (one compression
/// context), as client-go opens them for one forwarded connection: the error
/// stream (70 bytes), then the data stream.
const GO_CLIENT_SYN_STREAMS: &str = "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff800300010000001a00000003000000000000826a26ac0ad57850499508000000ffff";

/// What a spdystream server writes: two SYN_REPLYs, HEADERS with a two-valued
/// header, a pushed SYN_STREAM with FIN, DATA "hello", an empty DATA with FIN,
/// RST_STREAM CANCEL, PING 2, WINDOW_UPDATE, SETTINGS and GOAWAY.
const GO_SERVER_FRAMES: &str = "80030002000000140000000178f9e3c6a7c26260606000000000ffff800300020000000c00000003026100000000ffff800300080000001c000000036260606004a5cb0adddcd29c924c70e9c89004000000ffff800300010100001d00000002000000000000828a72159714a526e62215348900000000ffff000000030000000568656c6c6f000000030100000080030003000000080000000100000005800300060000000400000002800300090000000800000003000010008003000400000014000000020100000700010000000000040000006480030007000000080000000300000000";

fn unhex(hex: &str) -> BytesMut {
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    BytesMut::from(&bytes[..])
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

fn decode_all(decoder: &mut Decoder, src: &mut BytesMut) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(src).unwrap() {
        frames.push(frame);
    }
    assert!(src.is_empty(), "{} bytes left over", src.len());
    frames
}

fn one_of_each() -> Vec<Frame> {
    let h = headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "7")]);
    vec![
        Frame::SynStream {
            stream_id: 1,
            associated_stream_id: 0,
            priority: 3,
            slot: 0,
            fin: false,
            unidirectional: true,
            headers: h.clone(),
        },
        Frame::SynReply { stream_id: 1, fin: true, headers: headers(&[("a", "1"), ("a", "2")]) },
        Frame::RstStream { stream_id: 3, status: RstStatus::Cancel },
        Frame::RstStream { stream_id: 3, status: RstStatus::Other(42) },
        Frame::Settings {
            clear: true,
            settings: vec![Setting { id: 7, flags: 1, value: 65536 }, Setting { id: 4, flags: 0, value: 100 }],
        },
        Frame::Settings { clear: false, settings: vec![] },
        Frame::Ping { id: 1 },
        Frame::GoAway { last_good_stream_id: 5, status: GoAwayStatus::InternalError },
        Frame::Headers { stream_id: 5, fin: false, headers: h },
        Frame::Headers { stream_id: 5, fin: true, headers: Headers::new() },
        Frame::WindowUpdate { stream_id: 0, delta: 65536 },
        Frame::WindowUpdate { stream_id: 9, delta: MAX_STREAM_ID },
        Frame::Data { stream_id: 1, fin: false, data: Bytes::from_static(b"hello") },
        Frame::Data { stream_id: MAX_STREAM_ID, fin: true, data: Bytes::new() },
    ]
}

#[test]
fn every_frame_type_round_trips() {
    let frames = one_of_each();
    let mut encoder = Encoder::new().unwrap();
    let mut wire = BytesMut::new();
    for frame in &frames {
        encoder.encode(frame, &mut wire).unwrap();
    }
    let mut decoder = Decoder::new(Limits::default());
    assert_eq!(decode_all(&mut decoder, &mut wire), frames);
}

#[test]
fn decoding_byte_by_byte_gives_the_same_frames() {
    let mut encoder = Encoder::new().unwrap();
    let mut wire = BytesMut::new();
    for frame in one_of_each() {
        encoder.encode(&frame, &mut wire).unwrap();
    }
    let mut decoder = Decoder::new(Limits::default());
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    for byte in wire {
        src.put_u8(byte);
        while let Some(frame) = decoder.decode(&mut src).unwrap() {
            frames.push(frame);
        }
    }
    // DATA comes out byte by byte; glue the pieces back together.
    let mut glued: Vec<Frame> = Vec::new();
    for frame in frames {
        match (glued.last_mut(), frame) {
            (
                Some(Frame::Data { stream_id: last_id, fin: last_fin, data: last }),
                Frame::Data { stream_id, fin, data },
            ) if *last_id == stream_id && !*last_fin => {
                let mut joined = BytesMut::from(&last[..]);
                joined.extend_from_slice(&data);
                *last = joined.freeze();
                *last_fin = fin;
            }
            (_, frame) => glued.push(frame),
        }
    }
    assert_eq!(glued, one_of_each());
}

#[test]
fn decodes_client_go_syn_streams() {
    let mut wire = unhex(GO_CLIENT_SYN_STREAMS);
    let frames = decode_all(&mut Decoder::new(Limits::default()), &mut wire);
    let [first, second] = &frames[..] else { panic!("{frames:?}") };
    let Frame::SynStream { stream_id: 1, headers, fin: false, .. } = first else { panic!("{first:?}") };
    assert_eq!(headers.get("streamtype"), Some("error"));
    assert_eq!(headers.get("port"), Some("8080"));
    assert_eq!(headers.get("requestid"), Some("0"));
    let Frame::SynStream { stream_id: 3, headers, .. } = second else { panic!("{second:?}") };
    assert_eq!(headers.get("streamtype"), Some("data"));
    assert_eq!(headers.len(), 3);
}

#[test]
fn decodes_spdystream_server_frames() {
    let mut wire = unhex(GO_SERVER_FRAMES);
    let frames = decode_all(&mut Decoder::new(Limits::default()), &mut wire);
    let expected = vec![
        Frame::SynReply { stream_id: 1, fin: false, headers: Headers::new() },
        Frame::SynReply { stream_id: 3, fin: false, headers: Headers::new() },
        Frame::Headers { stream_id: 3, fin: false, headers: headers(&[("x-multi", "a"), ("x-multi", "b")]) },
        Frame::SynStream {
            stream_id: 2,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: true,
            unidirectional: false,
            headers: headers(&[("streamtype", "data")]),
        },
        Frame::Data { stream_id: 3, fin: false, data: Bytes::from_static(b"hello") },
        Frame::Data { stream_id: 3, fin: true, data: Bytes::new() },
        Frame::RstStream { stream_id: 1, status: RstStatus::Cancel },
        Frame::Ping { id: 2 },
        Frame::WindowUpdate { stream_id: 3, delta: 4096 },
        Frame::Settings {
            clear: false,
            settings: vec![Setting { id: 7, flags: 1, value: 65536 }, Setting { id: 4, flags: 0, value: 100 }],
        },
        Frame::GoAway { last_good_stream_id: 3, status: GoAwayStatus::Ok },
    ];
    assert_eq!(frames, expected);
}

#[test]
fn every_prefix_asks_for_more() {
    let mut wire = BytesMut::new();
    Encoder::new()
        .unwrap()
        .encode(&Frame::SynReply { stream_id: 1, fin: false, headers: headers(&[("k", "v")]) }, &mut wire)
        .unwrap();
    for len in 0..wire.len() {
        let mut prefix = BytesMut::from(&wire[..len]);
        assert_eq!(Decoder::new(Limits::default()).decode(&mut prefix), Ok(None), "prefix of {len}");
    }
}

fn decode_err(bytes: &[u8], limits: Limits) -> FrameError {
    let mut src = BytesMut::from(bytes);
    let mut decoder = Decoder::new(limits);
    loop {
        match decoder.decode(&mut src) {
            Err(e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error for {bytes:02x?}"),
        }
    }
}

#[test]
fn malformed_frames_are_errors() {
    let d = Limits::default();
    let cases: Vec<(&[u8], FrameError)> = vec![
        (b"\x80\x02\x00\x06\x00\x00\x00\x04\0\0\0\x01", FrameError::UnsupportedVersion(2)),
        (b"\x00\x00\x00\x00\x00\x00\x00\x01x", FrameError::ZeroStreamId("DATA")),
        (b"\x80\x03\x00\x03\x00\x00\x00\x08\0\0\0\0\0\0\0\x05", FrameError::ZeroStreamId("RST_STREAM")),
        (b"\x80\x03\x00\x03\x00\x00\x00\x08\0\0\0\x01\0\0\0\0", FrameError::InvalidRstStatus),
        (b"\x80\x03\x00\x03\x00\x00\x00\x04\0\0\0\x01", FrameError::InvalidLength { frame: "RST_STREAM", len: 4 }),
        (b"\x80\x03\x00\x06\x00\x00\x00\x05\0\0\0\x01\0", FrameError::InvalidLength { frame: "PING", len: 5 }),
        (b"\x80\x03\x00\x07\x00\x00\x00\x04\0\0\0\x01", FrameError::InvalidLength { frame: "GOAWAY", len: 4 }),
        (b"\x80\x03\x00\x09\x00\x00\x00\x00", FrameError::InvalidLength { frame: "WINDOW_UPDATE", len: 0 }),
        (b"\x80\x03\x00\x01\x00\x00\x00\x02\0\0", FrameError::InvalidLength { frame: "SYN_STREAM", len: 2 }),
        (b"\x80\x03\x00\x02\x00\x00\x00\x00", FrameError::InvalidLength { frame: "SYN_REPLY", len: 0 }),
        // SETTINGS announcing 1000 entries but holding one.
        (
            b"\x80\x03\x00\x04\x00\x00\x00\x0c\0\0\x03\xe8\0\0\0\x07\0\0\0\x01",
            FrameError::InvalidLength { frame: "SETTINGS", len: 12 },
        ),
        // A control frame over the limit is refused from its header alone.
        (b"\x80\x03\x00\x02\x00\xff\xff\xff", FrameError::FrameTooLarge { len: MAX_FRAME_LENGTH, max: 1 << 20 }),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode_err(bytes, d), expected, "{bytes:02x?}");
    }
    let small = Limits { max_data_frame: 4, ..d };
    assert_eq!(decode_err(b"\x00\x00\x00\x01\x00\x00\x00\x05", small), FrameError::FrameTooLarge { len: 5, max: 4 });
}

#[test]
fn bogus_header_blocks_are_errors() {
    let mut c = HeaderCompressor::new().unwrap();
    let mut bogus = Vec::new();
    // Claims a billion headers but holds none.
    c.compress(b"\x3b\x9a\xca\x00", &mut bogus).unwrap();
    let mut wire = BytesMut::new();
    put_control_header(&mut wire, TYPE_SYN_REPLY, 0, 4 + bogus.len());
    wire.put_u32(1);
    wire.put_slice(&bogus);
    assert!(matches!(decode_err(&wire, Limits::default()), FrameError::InvalidHeaderBlock(_)));

    // Not zlib at all.
    let wire = b"\x80\x03\x00\x02\x00\x00\x00\x0a\0\0\0\x01garbag";
    assert!(matches!(decode_err(wire, Limits::default()), FrameError::Compression(_)));
}

#[test]
fn zip_bomb_is_refused() {
    // 8 MiB of header value, which deflate shrinks to a few KiB.
    let big = "a".repeat(8 << 20);
    let block = crate::headers::encode_block(&headers(&[("x", &big)]));
    assert!(matches!(block, Err(FrameError::InvalidHeader(_))), "the encoder refuses to build it");
    let mut raw = Vec::new();
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.push(b'x');
    raw.extend_from_slice(&(big.len() as u32).to_be_bytes());
    raw.extend_from_slice(big.as_bytes());
    let mut compressed = Vec::new();
    HeaderCompressor::new().unwrap().compress(&raw, &mut compressed).unwrap();
    let mut wire = BytesMut::new();
    put_control_header(&mut wire, TYPE_HEADERS, 0, 4 + compressed.len());
    wire.put_u32(1);
    wire.put_slice(&compressed);
    assert!(wire.len() < 64 << 10);
    assert_eq!(decode_err(&wire, Limits::default()), FrameError::HeaderBlockTooLarge { max: 256 << 10 });
}

#[test]
fn unknown_control_frames_are_skipped_without_buffering() {
    let mut src = BytesMut::from(&b"\x80\x03\x00\x0a\x00\x01\x00\x00"[..]);
    let mut decoder = Decoder::new(Limits::default());
    assert_eq!(decoder.decode(&mut src), Ok(None));
    for _ in 0..16 {
        src.put_slice(&[0u8; 4096]);
        assert_eq!(decoder.decode(&mut src), Ok(None));
        assert!(src.is_empty(), "skipped bytes are dropped as they come");
    }
    src.put_slice(b"\x80\x03\x00\x06\x00\x00\x00\x04\0\0\0\x07");
    assert_eq!(decoder.decode(&mut src), Ok(Some(Frame::Ping { id: 7 })));
}

#[test]
fn encoder_refuses_invalid_frames() {
    let mut encoder = Encoder::new().unwrap();
    let mut dst = BytesMut::new();
    let bad = [
        Frame::Data { stream_id: 0, fin: false, data: Bytes::new() },
        Frame::Data { stream_id: MAX_STREAM_ID + 1, fin: false, data: Bytes::new() },
        Frame::RstStream { stream_id: 1, status: RstStatus::Other(0) },
        Frame::SynStream {
            stream_id: 0,
            associated_stream_id: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::new(),
        },
        Frame::SynReply { stream_id: 1, fin: false, headers: headers(&[("", "x")]) },
    ];
    for frame in bad {
        assert!(encoder.encode(&frame, &mut dst).is_err(), "{frame:?}");
        assert!(dst.is_empty());
    }
}

/// A cheap stand-in for the fuzzer: random bytes and mangled valid frames
/// never panic and never loop.
#[test]
fn random_input_never_panics() {
    let mut valid = BytesMut::new();
    let mut encoder = Encoder::new().unwrap();
    for frame in one_of_each() {
        encoder.encode(&frame, &mut valid).unwrap();
    }
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..2000 {
        let mut input = if round % 2 == 0 {
            (0..(next() % 512)).map(|_| next() as u8).collect::<Vec<_>>()
        } else {
            let mut v = valid.to_vec();
            for _ in 0..1 + next() % 8 {
                let i = (next() as usize) % v.len();
                v[i] = next() as u8;
            }
            v
        };
        if round % 3 == 0 {
            input[0] |= 0x80;
            if input.len() > 1 {
                input[1] = 3;
            }
        }
        let mut decoder = Decoder::new(Limits::default());
        let mut src = BytesMut::from(&input[..]);
        for _ in 0..input.len() + 1 {
            match decoder.decode(&mut src) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
