//! zlib header compression with the SPDY/3 dictionary.
//!
//! SPDY/3 compresses every name/value header block with zlib, primed with a
//! fixed dictionary of common HTTP words. Each direction of a session is *one*
//! zlib stream: every block is compressed with a sync flush so it ends on a
//! byte boundary, and the next block continues the same stream (it may refer
//! back to earlier blocks). So a session owns one [`HeaderCompressor`] for what
//! it sends and one [`HeaderDecompressor`] for what it receives, and frames
//! must be encoded and decoded in wire order.
//!
//! The decompressor refuses to produce more than a caller-given number of
//! bytes per block, so a small compressed block cannot expand into a huge
//! allocation (a "zip bomb"). That bounds the raw block only; `headers`
//! bounds what the block decodes to.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::frame_error::FrameError;

/// The zlib dictionary of SPDY/3 (and 3.1), from the SPDY Protocol Draft 3.1,
/// section 2.6.10.1 "Compression": length-prefixed header names and values,
/// then a run of common header text. Its Adler-32 (the zlib dictionary id) is
/// `0xe3c6a7c2`.
pub(crate) const DICTIONARY: &[u8] = b"\
    \0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05trace\
    \0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0faccept-language\
    \0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorization\0\0\0\x0dcache-control\
    \0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\x10content-language\
    \0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-md5\0\0\0\x0dcontent-range\
    \0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\0\0\0\x06expect\0\0\0\x07expires\0\0\0\x04from\
    \0\0\0\x04host\0\0\0\x08if-match\0\0\0\x11if-modified-since\0\0\0\x0dif-none-match\0\0\0\x08if-range\
    \0\0\0\x13if-unmodified-since\0\0\0\x0dlast-modified\0\0\0\x08location\0\0\0\x0cmax-forwards\
    \0\0\0\x06pragma\0\0\0\x12proxy-authenticate\0\0\0\x13proxy-authorization\0\0\0\x05range\
    \0\0\0\x07referer\0\0\0\x0bretry-after\0\0\0\x06server\0\0\0\x02te\0\0\0\x07trailer\
    \0\0\0\x11transfer-encoding\0\0\0\x07upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\x03via\
    \0\0\0\x07warning\0\0\0\x10www-authenticate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06status\
    \0\0\0\x06200 OK\0\0\0\x07version\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\x0aset-cookie\
    \0\0\0\x0akeep-alive\0\0\0\x06origin\
    100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 No\
    n-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403\
    \x20Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Fe\
    b Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunke\
    d,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/\
    javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Compresses the header blocks one endpoint sends, in order.
pub(crate) struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    pub(crate) fn new() -> Result<Self, FrameError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(DICTIONARY).map_err(|e| FrameError::Compression(e.to_string()))?;
        Ok(HeaderCompressor { zlib })
    }

    /// Compresses one raw name/value block, ending it with a sync flush.
    pub(crate) fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start_in = self.zlib.total_in();
        out.reserve(raw.len() / 2 + 64);
        loop {
            let consumed = consumed_since(self.zlib.total_in(), start_in);
            let rest = raw.get(consumed..).unwrap_or_default();
            self.zlib
                .compress_vec(rest, out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            // The flush is complete once all input is taken and zlib left room unused.
            if consumed_since(self.zlib.total_in(), start_in) >= raw.len() && out.len() < out.capacity() {
                return Ok(());
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// Decompresses the header blocks one endpoint receives, in order.
pub(crate) struct HeaderDecompressor {
    zlib: Decompress,
}

impl HeaderDecompressor {
    pub(crate) fn new() -> Self {
        HeaderDecompressor { zlib: Decompress::new(true) }
    }

    /// Decompresses one block, which must be consumed whole and expand to at
    /// most `limit` bytes.
    pub(crate) fn decompress(&mut self, input: &[u8], limit: usize) -> Result<Vec<u8>, FrameError> {
        let start_in = self.zlib.total_in();
        let mut out = Vec::with_capacity(limit.min(input.len().saturating_mul(4)).clamp(64, 16 * 1024));
        loop {
            let consumed = consumed_since(self.zlib.total_in(), start_in);
            let before = (consumed, out.len());
            let rest = input.get(consumed..).unwrap_or_default();
            match self.zlib.decompress_vec(rest, &mut out, FlushDecompress::Sync) {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(DICTIONARY).map_err(|e| FrameError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            if out.len() > limit {
                return Err(FrameError::HeaderBlockTooLarge { max: limit });
            }
            let consumed = consumed_since(self.zlib.total_in(), start_in);
            let room_left = out.len() < out.capacity();
            if consumed >= input.len() && room_left {
                return Ok(out);
            }
            if room_left && (consumed, out.len()) == before {
                // zlib takes no more input although it has room: the stream ended early.
                return Err(FrameError::Compression("trailing bytes after the end of the zlib stream".into()));
            }
            if !room_left {
                let grow = out.len().max(1024).min(limit + 1 - out.len());
                out.reserve_exact(grow);
            }
        }
    }
}

fn consumed_since(total: u64, start: u64) -> usize {
    usize::try_from(total.saturating_sub(start)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut zlib = Compress::new(Compression::default(), true);
        assert_eq!(zlib.set_dictionary(DICTIONARY).ok(), Some(0xe3c6_a7c2));
    }

    #[test]
    fn blocks_share_one_context() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut d = HeaderDecompressor::new();
        let block = b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x04data";
        let (mut first, mut second) = (Vec::new(), Vec::new());
        c.compress(block, &mut first).unwrap();
        c.compress(block, &mut second).unwrap();
        assert!(second.len() < first.len(), "the second block refers back to the first");
        assert_eq!(d.decompress(&first, 1024).unwrap(), block);
        assert_eq!(d.decompress(&second, 1024).unwrap(), block);
    }

    #[test]
    fn zip_bomb_is_refused() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut bomb = Vec::new();
        c.compress(&vec![0u8; 8 << 20], &mut bomb).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = HeaderDecompressor::new().decompress(&bomb, 256 * 1024).unwrap_err();
        assert_eq!(err, FrameError::HeaderBlockTooLarge { max: 256 * 1024 });
    }

    #[test]
    fn garbage_is_an_error() {
        let mut d = HeaderDecompressor::new();
        assert!(matches!(d.decompress(b"\x01\x02\x03\x04garbage", 1024), Err(FrameError::Compression(_))));
    }
}
