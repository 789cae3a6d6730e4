//! Header lists and the SPDY/3 name/value block they travel in.
//!
//! A block is a 32-bit count of names, then for each name a 32-bit length and
//! the name, a 32-bit length and the value. Names are lowercase and appear
//! once; several values for one name are joined with NUL bytes. [`Headers`]
//! keeps one entry per value, so callers never see the NULs; encoding joins
//! them again. Parsing checks every length against the bytes that are really
//! there before allocating anything.

use crate::frame_error::FrameError;

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

/// Parses an uncompressed name/value block; it must be used up exactly.
pub(crate) fn parse_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    let count = take_u32(&mut raw)?;
    // Each name/value pair takes at least 8 bytes, so a larger count is a lie.
    if count as usize > raw.len() / 8 {
        return Err(FrameError::InvalidHeaderBlock("more names announced than the block holds"));
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = take_str(&mut raw, "header name is not UTF-8")?;
        if name.is_empty() {
            return Err(FrameError::InvalidHeaderBlock("empty header name"));
        }
        let value = take_str(&mut raw, "header value is not UTF-8")?;
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
}
