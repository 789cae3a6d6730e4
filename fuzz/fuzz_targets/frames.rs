//! The frame decoder, header decompression included, on arbitrary bytes fed
//! in arbitrary pieces: it must never panic, hang or grow without bound, and
//! whatever it decodes must encode and decode again.
#![no_main]

use bytes::BytesMut;
use kubesocks_spdy::frame::{Decoder, Encoder, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte sets how many bytes arrive at a time.
    let Some((&step, wire)) = input.split_first() else { return };
    let step = usize::from(step % 64) + 1;
    let limits = Limits { max_control_frame: 64 << 10, max_header_block: 64 << 10, ..Limits::default() };
    let mut decoder = Decoder::new(limits);
    let (mut encoder, mut again) = (Encoder::new().unwrap(), Decoder::new(Limits::default()));
    let mut src = BytesMut::new();
    for piece in wire.chunks(step) {
        src.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut src) {
                Ok(Some(frame)) => {
                    let mut out = BytesMut::new();
                    if encoder.encode(&frame, &mut out).is_ok() {
                        assert!(matches!(again.decode(&mut out), Ok(Some(_))), "re-decoding {frame:?}");
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(src.len() <= (64 << 10) + 8 + 64, "buffered {} bytes", src.len());
        }
    }
});
