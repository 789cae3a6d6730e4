//! Header lists and the SPDY/3 name/value block they travel in.
//!
//! A block is a 32-bit count of names, then for each name a 32-bit length and
//! the name, a 32-bit length and the value. Names are lowercase and appear
//! once; several values for one name are joined with NUL bytes. [`Headers`]
//! keeps one entry per value, so callers never see the NULs; encoding joins
//! them again. Parsing checks every length against the bytes that are really
//! there before allocating anything.
//!
//! # Limits on what a block decodes to
//!
//! The decompressed size of a block (bounded by the decoder's
//! `Limits::max_header_block`) does not bound what it decodes to: every value
//! piece gets its own copy of the name, so a block of one long name and a
//! value of as many NULs decodes to the name's length times the number of
//! NULs (a 131,000-byte name with 131,000 NULs is a 262,012-byte block, a few
//! hundred bytes compressed, and would decode to 17 GB). Headers are decoded
//! before the frame's stream is looked up, so any peer could send one. So
//! [`parse_block`] also refuses, before copying anything:
//!
//! * more than [`MAX_DECODED_BYTES`] (256 KiB) of names and values in all,
//!   each name counted once for every value it carries
//!   ([`FrameError::HeaderListTooLarge`]);
//! * more than [`MAX_HEADERS`] (256) name/value pairs
//!   ([`FrameError::TooManyHeaders`]).
//!
//! Port-forward header blocks carry a handful of short headers (`streamtype`,
//! `port`, `requestid`, an error message), far below both. A block without
//! NULs always decodes to fewer bytes than it holds, so the byte limit only
//! ever refuses blocks that NULs multiply, or blocks already larger than the
//! default decompressed limit. Like every decoding error, either one ends the
//! session with a protocol error.

use crate::frame_error::FrameError;

/// The most bytes of names and values one decoded block may hold, each name
/// counted once per value: the default decompressed limit, so that NULs cannot
/// make a block decode to more than it may hold.
pub(crate) const MAX_DECODED_BYTES: usize = 256 << 10;

/// The most name/value pairs one decoded block may hold: far above the three
/// or four that port-forward sends. The byte limit alone would still allow
/// 262,144 pairs of a one-byte name and an empty value, each costing an
/// allocation and a 48-byte entry: over 20 MB from one block.
pub(crate) const MAX_HEADERS: usize = 256;

/// An ordered list of header names and values, as carried by SYN_STREAM,
/// SYN_REPLY and HEADERS frames.
///
/// Names are stored lowercase; a name may appear with several values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Adds a value for `name` (lowercased), after any it already has.
    pub fn append(&mut self, name: &str, value: &str) {
        self.entries.push((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The first value of `name`, compared without regard to ASCII case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let name = name.to_ascii_lowercase();
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// All (name, value) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of (name, value) pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.append(name, value);
        }
        headers
    }
}

/// The largest raw block [`encode_block`] produces: far below the 24-bit frame
/// length, so its compressed form always fits in a frame.
const MAX_ENCODED_BLOCK: usize = 1 << 20;

/// Serialises `headers` as an uncompressed name/value block.
pub(crate) fn encode_block(headers: &Headers) -> Result<Vec<u8>, FrameError> {
    // Group values by name, keeping the order in which names first appear.
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in headers.iter() {
        if name.is_empty() || name.contains('\0') {
            return Err(FrameError::InvalidHeader(format!("invalid header name {name:?}")));
        }
        if value.contains('\0') {
            return Err(FrameError::InvalidHeader(format!("NUL in the value of header {name:?}")));
        }
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => grouped.push((name, vec![value])),
        }
    }
    let mut raw = Vec::with_capacity(64);
    put_len(&mut raw, grouped.len())?;
    for (name, values) in grouped {
        put_len(&mut raw, name.len())?;
        raw.extend_from_slice(name.as_bytes());
        let value_len = values.iter().map(|v| v.len()).sum::<usize>() + values.len() - 1;
        put_len(&mut raw, value_len)?;
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                raw.push(0);
            }
            raw.extend_from_slice(value.as_bytes());
        }
        if raw.len() > MAX_ENCODED_BLOCK {
            return Err(FrameError::InvalidHeader(format!("header block larger than {MAX_ENCODED_BLOCK} bytes")));
        }
    }
    Ok(raw)
}

fn put_len(raw: &mut Vec<u8>, len: usize) -> Result<(), FrameError> {
    let len = u32::try_from(len).map_err(|_| FrameError::InvalidHeader("header too long".into()))?;
    raw.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Parses an uncompressed name/value block; it must be used up exactly, and
/// decode to at most [`MAX_HEADERS`] pairs and [`MAX_DECODED_BYTES`] bytes.
pub(crate) fn parse_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    let count = take_u32(&mut raw)?;
    // Each name/value pair takes at least 8 bytes, so a larger count is a lie.
    if count as usize > raw.len() / 8 {
        return Err(FrameError::InvalidHeaderBlock("more names announced than the block holds"));
    }
    // Each name has at least one value, so a larger count is too many already.
    if count as usize > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders { max: MAX_HEADERS });
    }
    let mut headers = Headers::new();
    let mut decoded = 0usize;
    for _ in 0..count {
        let name = take_str(&mut raw, "header name is not UTF-8")?;
        if name.is_empty() {
            return Err(FrameError::InvalidHeaderBlock("empty header name"));
        }
        let value = take_str(&mut raw, "header value is not UTF-8")?;
        // What splitting the value will add, checked before copying anything:
        // one pair per piece, each with its own copy of the name.
        let nuls = value.bytes().filter(|&b| b == 0).count();
        let pieces = nuls + 1;
        decoded = decoded.saturating_add(name.len().saturating_mul(pieces)).saturating_add(value.len() - nuls);
        if decoded > MAX_DECODED_BYTES {
            return Err(FrameError::HeaderListTooLarge { max: MAX_DECODED_BYTES });
        }
        if pieces > MAX_HEADERS - headers.len() {
            return Err(FrameError::TooManyHeaders { max: MAX_HEADERS });
        }
        for value in value.split('\0') {
            headers.append(name, value);
        }
    }
    if !raw.is_empty() {
        return Err(FrameError::InvalidHeaderBlock("trailing bytes after the last header"));
    }
    Ok(headers)
}

fn take_u32(raw: &mut &[u8]) -> Result<u32, FrameError> {
    let (head, rest) = raw.split_first_chunk::<4>().ok_or(FrameError::InvalidHeaderBlock("truncated header block"))?;
    *raw = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_str<'a>(raw: &mut &'a [u8], not_utf8: &'static str) -> Result<&'a str, FrameError> {
    let len = take_u32(raw)? as usize;
    if len > raw.len() {
        return Err(FrameError::InvalidHeaderBlock("header length beyond the end of the block"));
    }
    let (bytes, rest) = raw.split_at(len);
    *raw = rest;
    std::str::from_utf8(bytes).map_err(|_| FrameError::InvalidHeaderBlock(not_utf8))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::HeaderCompressor;
    use crate::frame::{Decoder, Limits};
    use bytes::BytesMut;

    /// A raw block of these (name, value) pairs, values as they are on the wire.
    fn block(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
        for (name, value) in pairs {
            for bytes in [name, value] {
                raw.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                raw.extend_from_slice(bytes);
            }
        }
        raw
    }

    /// One 131,000-byte name with a value of 131,000 NULs: 262,012 bytes,
    /// which would decode to 131,001 copies of the name, some 17 GB.
    fn nul_bomb() -> Vec<u8> {
        let raw = block(&[(&[b'a'; 131_000], &[0; 131_000])]);
        assert_eq!(raw.len(), 262_012);
        raw
    }

    #[test]
    fn round_trip_joins_and_splits_values() {
        let headers: Headers =
            [("streamType", "data"), ("port", "8080"), ("x", "a"), ("X", "b"), ("empty", "")].into_iter().collect();
        let raw = encode_block(&headers).unwrap();
        assert_eq!(&raw[..4], &4u32.to_be_bytes(), "x appears once, with two values");
        let parsed = parse_block(&raw).unwrap();
        assert_eq!(parsed, headers);
        assert_eq!(parsed.get("StreamType"), Some("data"));
        assert_eq!(parsed.get_all("x").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn bad_names_are_not_encoded() {
        for (name, value) in [("", "v"), ("a\0b", "v"), ("n", "a\0b")] {
            let headers: Headers = [(name, value)].into_iter().collect();
            assert!(matches!(encode_block(&headers), Err(FrameError::InvalidHeader(_))));
        }
    }

    #[test]
    fn malformed_blocks_are_rejected() {
        let cases: &[&[u8]] = &[
            b"",
            b"\0\0\0",
            b"\xff\xff\xff\xff\0\0\0\x01a\0\0\0\x01b",
            b"\0\0\0\x01\xff\xff\xff\xffa\0\0\0\0",
            b"\0\0\0\x01\0\0\0\0\0\0\0\0",
            b"\0\0\0\x01\0\0\0\x01\xff\0\0\0\0",
            b"\0\0\0\x01\0\0\0\x01a\0\0\0\x05b",
            b"\0\0\0\x01\0\0\0\x01a\0\0\0\x01bX",
        ];
        for case in cases {
            assert!(matches!(parse_block(case), Err(FrameError::InvalidHeaderBlock(_))), "{case:?}");
        }
    }

    #[test]
    fn ordinary_blocks_decode_as_before() {
        let raw = block(&[
            (b"streamtype", b"error"),
            (b"Port", b"8080"),
            (b"requestid", b"0"),
            (b"x", b"a\0\0b"),
            (b"message", b""),
        ]);
        let parsed = parse_block(&raw).unwrap();
        let expected = [
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
            ("x", "a"),
            ("x", ""),
            ("x", "b"),
            ("message", ""),
        ];
        assert_eq!(parsed.iter().collect::<Vec<_>>(), expected);
        assert_eq!(parse_block(b"\0\0\0\0"), Ok(Headers::new()));
    }

    #[test]
    fn nul_bomb_is_refused_before_it_expands() {
        // Without the limits this would allocate some 17 GB (or abort trying).
        assert_eq!(parse_block(&nul_bomb()), Err(FrameError::HeaderListTooLarge { max: MAX_DECODED_BYTES }));
    }

    #[test]
    fn nul_bomb_in_a_frame_is_a_decode_error() {
        let mut compressed = Vec::new();
        HeaderCompressor::new().unwrap().compress(&nul_bomb(), &mut compressed).unwrap();
        assert!(compressed.len() < 1024, "{} bytes compressed", compressed.len());
        // SYN_REPLY and HEADERS for a stream that does not exist: the block is
        // decoded before any stream is looked up.
        for frame_type in [2u8, 8] {
            let len = (4 + compressed.len()) as u32;
            let mut wire = BytesMut::from(&[0x80, 0x03, 0x00, frame_type][..]);
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
            wire.extend_from_slice(&compressed);
            let result = Decoder::new(Limits::default()).decode(&mut wire);
            assert_eq!(result, Err(FrameError::HeaderListTooLarge { max: MAX_DECODED_BYTES }), "type {frame_type}");
        }
    }

    #[test]
    fn decoded_bytes_count_the_name_once_per_value() {
        let long = vec![b'v'; MAX_DECODED_BYTES - 1];
        assert_eq!(parse_block(&block(&[(b"n", &long)])).unwrap().len(), 1, "exactly at the limit");
        let longer = vec![b'v'; MAX_DECODED_BYTES];
        assert_eq!(
            parse_block(&block(&[(b"n", &longer)])),
            Err(FrameError::HeaderListTooLarge { max: MAX_DECODED_BYTES })
        );

        // 256 values of a 1 KiB name: the NULs themselves are not counted.
        let nuls = [0u8; MAX_HEADERS - 1];
        let name = vec![b'n'; MAX_DECODED_BYTES / MAX_HEADERS];
        let headers = parse_block(&block(&[(&name, &nuls)])).unwrap();
        assert_eq!(headers.len(), MAX_HEADERS);
        assert_eq!(headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>(), MAX_DECODED_BYTES);
        let name = vec![b'n'; MAX_DECODED_BYTES / MAX_HEADERS + 1];
        assert_eq!(
            parse_block(&block(&[(&name, &nuls)])),
            Err(FrameError::HeaderListTooLarge { max: MAX_DECODED_BYTES })
        );

        // The total runs over the whole block, not one header.
        let half = vec![b'v'; MAX_DECODED_BYTES / 2];
        assert_eq!(
            parse_block(&block(&[(b"a", &half), (b"b", &half)])),
            Err(FrameError::HeaderListTooLarge { max: MAX_DECODED_BYTES })
        );
    }

    #[test]
    fn too_many_headers_are_refused() {
        let too_many = Err(FrameError::TooManyHeaders { max: MAX_HEADERS });
        // As many names as the limit allows, or one more.
        let names: Vec<(&[u8], &[u8])> = vec![(b"a", b""); MAX_HEADERS + 1];
        assert_eq!(parse_block(&block(&names[..MAX_HEADERS])).unwrap().len(), MAX_HEADERS);
        assert_eq!(parse_block(&block(&names)), too_many);
        // One name with as many values, or one more.
        let nuls = [0u8; MAX_HEADERS];
        assert_eq!(parse_block(&block(&[(b"a", &nuls[1..])])).unwrap().len(), MAX_HEADERS);
        assert_eq!(parse_block(&block(&[(b"a", &nuls)])), too_many);
        // Names and values together: 128 + 128 pairs, or 128 + 129.
        let half = [0u8; MAX_HEADERS / 2];
        assert_eq!(parse_block(&block(&[(b"a", &half[1..]), (b"b", &half[1..])])).unwrap().len(), MAX_HEADERS);
        assert_eq!(parse_block(&block(&[(b"a", &half[1..]), (b"b", &half)])), too_many);
        // Far under the byte limit, far over this one.
        assert_eq!(parse_block(&block(&[(b"a", &[0; 4096])])), too_many);
    }
}
