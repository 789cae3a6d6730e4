//! The one error type of the wire format, [`FrameError`].
//!
//! Decoding or encoding a frame can fail in the frame layout itself
//! (`frame`), in a header block's name/value encoding (`headers`) or in its
//! zlib compression (`compress`). All three report the same error, and
//! `frame` builds on the other two, so the error lives below all of them
//! here: its users depend on it and it depends on none of them. The public
//! path is `frame::FrameError`, re-exported from `frame`.

/// Why bytes could not be decoded as frames, or a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A frame longer than the configured limit.
    #[error("frame of {len} bytes is larger than the {max}-byte limit")]
    FrameTooLarge {
        /// The frame's payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A control frame whose length does not fit its type.
    #[error("{frame} frame with invalid length {len}")]
    InvalidLength {
        /// The frame type.
        frame: &'static str,
        /// Its payload length.
        len: usize,
    },
    /// Stream id 0 in a frame that needs a stream.
    #[error("{0} frame for stream 0")]
    ZeroStreamId(&'static str),
    /// A stream id above 2^31-1 given to the encoder.
    #[error("stream id {0} does not fit in 31 bits")]
    StreamIdTooLarge(u32),
    /// RST_STREAM with status 0, which the protocol forbids.
    #[error("RST_STREAM with status 0")]
    InvalidRstStatus,
    /// A header block that does not parse.
    #[error("malformed header block: {0}")]
    InvalidHeaderBlock(&'static str),
    /// A header that cannot be encoded.
    #[error("{0}")]
    InvalidHeader(String),
    /// A header block that decompresses to more than the limit.
    #[error("header block decompresses to more than {max} bytes")]
    HeaderBlockTooLarge {
        /// The limit.
        max: usize,
    },
    /// A header block that decodes to more name and value bytes than the
    /// limit, each name counted once for every value it carries (NULs in a
    /// value make one header per piece, each with a copy of the name).
    #[error("header block decodes to more than {max} bytes of names and values")]
    HeaderListTooLarge {
        /// The limit.
        max: usize,
    },
    /// A header block that decodes to more name/value pairs than the limit.
    #[error("header block decodes to more than {max} headers")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// zlib failed.
    #[error("header compression: {0}")]
    Compression(String),
}
