//! The header-block parser on arbitrary bytes, on its own and behind zlib in
//! a HEADERS frame: it must never panic, whatever it decodes must stay within
//! its limits however many NULs repeat a name, and both paths must agree.
#![no_main]

use bytes::BytesMut;
use flate2::{Compress, Compression, FlushCompress};
use kubesocks_spdy::frame::{Decoder, Frame, Limits, MAX_FRAME_LENGTH};
use kubesocks_spdy::fuzz::{MAX_DECODED_BYTES, MAX_HEADERS, parse_header_block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let parsed = parse_header_block(raw);
    if let Ok(headers) = &parsed {
        // Counted here from what came out, not from the block.
        let decoded: usize = headers.iter().map(|(name, value)| name.len() + value.len()).sum();
        assert!(decoded <= MAX_DECODED_BYTES, "{decoded} bytes decoded");
        assert!(headers.len() <= MAX_HEADERS, "{} headers decoded", headers.len());
        for (name, value) in headers.iter() {
            assert!(!name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()), "name {name:?}");
            assert!(!value.contains('\0'), "NUL in the value of {name:?}");
        }
    }

    // The same block as a peer sends it: compressed, in a HEADERS frame. The
    // decoder's own limits are lifted so that only the parser's apply.
    if raw.len() > MAX_FRAME_LENGTH / 2 {
        return;
    }
    let mut zlib = Compress::new(Compression::fast(), true);
    let mut block = Vec::with_capacity(raw.len() * 2 + 1024);
    zlib.compress_vec(raw, &mut block, FlushCompress::Sync).unwrap();
    assert_eq!(zlib.total_in(), raw.len() as u64, "room enough to compress at once");
    let mut wire = BytesMut::from(&[0x80, 0x03, 0x00, 0x08][..]);
    wire.extend_from_slice(&(4 + block.len() as u32).to_be_bytes());
    wire.extend_from_slice(&1u32.to_be_bytes());
    wire.extend_from_slice(&block);
    let limits =
        Limits { max_control_frame: MAX_FRAME_LENGTH, max_header_block: MAX_FRAME_LENGTH, ..Limits::default() };
    let framed = Decoder::new(limits).decode(&mut wire).map(|frame| match frame {
        Some(Frame::Headers { stream_id: 1, fin: false, headers }) => headers,
        other => panic!("decoded {other:?}"),
    });
    assert_eq!(framed, parsed);
    assert!(wire.is_empty(), "{} bytes left", wire.len());
});
