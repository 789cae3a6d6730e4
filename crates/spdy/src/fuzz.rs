//! Entry points for the fuzz targets in `fuzz/` (the repository's), compiled only
//! with the `fuzzing` feature: not an API. The `frames` target needs none of
//! it (it drives the public [`Decoder`](crate::frame::Decoder)); the `headers`
//! target parses header blocks without the zlib layer in front, which nothing
//! public does, and checks what it gets against the limits below.

use crate::Headers;
use crate::frame::FrameError;

/// The most bytes of names and values one decoded header block holds, each
/// name counted once per value.
pub const MAX_DECODED_BYTES: usize = crate::headers::MAX_DECODED_BYTES;

/// The most name/value pairs one decoded header block holds.
pub const MAX_HEADERS: usize = crate::headers::MAX_HEADERS;

/// Parses an uncompressed SPDY/3 name/value block, as the frame decoder does
/// once it has decompressed one.
pub fn parse_header_block(raw: &[u8]) -> Result<Headers, FrameError> {
    crate::headers::parse_block(raw)
}
