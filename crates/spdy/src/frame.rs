//! SPDY/3.1 frames and their wire format.
//!
//! Every frame starts with 8 bytes. A control frame has the high bit set,
//! then a 15-bit version (3), a 16-bit type, 8 bits of flags and a 24-bit
//! payload length; a DATA frame has the high bit clear, a 31-bit stream id,
//! flags and length. [`Encoder`] writes frames, [`Decoder`] reads them
//! incrementally from a [`BytesMut`] that the caller fills from the transport.
//!
//! The decoder never buffers more than one control frame: it rejects a
//! control frame longer than [`Limits::max_control_frame`] from its header
//! alone, skips unknown control types without buffering them, and hands out
//! DATA payload as it arrives, so one huge DATA frame may come out as several
//! [`Frame::Data`] pieces (only the last carries `fin`). Each of them owns one
//! direction's header compression context, so a session needs exactly one
//! encoder and one decoder and must use them in wire order.
//!
//! After an error (a [`FrameError`], which header compression and header
//! block parsing report too) the byte stream cannot be resynchronised: the
//! session must end (SPDY has no way to recover from a framing error either).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::compress::{HeaderCompressor, HeaderDecompressor};
use crate::headers::{Headers, encode_block, parse_block};

pub use crate::frame_error::FrameError;

/// The protocol version this crate speaks (SPDY/3 framing, 3.1 semantics).
pub const VERSION: u16 = 3;

/// The largest payload a 24-bit length field can describe.
pub const MAX_FRAME_LENGTH: usize = 0xff_ffff;

/// The largest stream id (31 bits).
pub const MAX_STREAM_ID: u32 = 0x7fff_ffff;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream's id: odd when the client opens it, even for the server.
        stream_id: u32,
        /// The stream this one is associated with (server push), or 0.
        associated_stream_id: u32,
        /// 0 (highest) to 7 (lowest).
        priority: u8,
        /// Unused in SPDY/3.1; 0.
        slot: u8,
        /// The sender will send nothing more on this stream.
        fin: bool,
        /// The receiver may not send on this stream.
        unidirectional: bool,
        /// The request headers.
        headers: Headers,
    },
    /// Accepts a stream opened by the other endpoint.
    SynReply {
        /// The stream being accepted.
        stream_id: u32,
        /// The sender will send nothing more on this stream.
        fin: bool,
        /// The reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The stream aborted.
        stream_id: u32,
        /// Why.
        status: RstStatus,
    },
    /// Session parameters; this crate records and otherwise ignores them.
    Settings {
        /// The receiver should forget the settings it persisted.
        clear: bool,
        /// The id/value pairs.
        settings: Vec<Setting>,
    },
    /// A round-trip probe: the receiver echoes it. Client ids are odd, server ids even.
    Ping {
        /// The probe's id.
        id: u32,
    },
    /// The sender accepts no more new streams.
    GoAway {
        /// The last stream the sender accepted from the receiver.
        last_good_stream_id: u32,
        /// Why the session ends.
        status: GoAwayStatus,
    },
    /// More headers for a stream.
    Headers {
        /// The stream concerned.
        stream_id: u32,
        /// The sender will send nothing more on this stream.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// Grants the sender more flow-control window; stream 0 means the session.
    WindowUpdate {
        /// The stream concerned, or 0 for the whole session.
        stream_id: u32,
        /// The bytes granted (31 bits).
        delta: u32,
    },
    /// Stream payload. A decoded frame may be part of a larger wire frame.
    Data {
        /// The stream concerned.
        stream_id: u32,
        /// The sender will send nothing more on this stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
}

/// The status code of a RST_STREAM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RstStatus {
    /// PROTOCOL_ERROR (1).
    ProtocolError,
    /// INVALID_STREAM (2): a frame for a stream that is not active.
    InvalidStream,
    /// REFUSED_STREAM (3): the stream was refused before any processing.
    RefusedStream,
    /// UNSUPPORTED_VERSION (4).
    UnsupportedVersion,
    /// CANCEL (5): the stream is no longer needed.
    Cancel,
    /// INTERNAL_ERROR (6).
    InternalError,
    /// FLOW_CONTROL_ERROR (7).
    FlowControlError,
    /// STREAM_IN_USE (8).
    StreamInUse,
    /// STREAM_ALREADY_CLOSED (9).
    StreamAlreadyClosed,
    /// FRAME_TOO_LARGE (11).
    FrameTooLarge,
    /// Any other non-zero code.
    Other(u32),
}

impl RstStatus {
    fn from_code(code: u32) -> RstStatus {
        match code {
            1 => RstStatus::ProtocolError,
            2 => RstStatus::InvalidStream,
            3 => RstStatus::RefusedStream,
            4 => RstStatus::UnsupportedVersion,
            5 => RstStatus::Cancel,
            6 => RstStatus::InternalError,
            7 => RstStatus::FlowControlError,
            8 => RstStatus::StreamInUse,
            9 => RstStatus::StreamAlreadyClosed,
            11 => RstStatus::FrameTooLarge,
            other => RstStatus::Other(other),
        }
    }

    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        match self {
            RstStatus::ProtocolError => 1,
            RstStatus::InvalidStream => 2,
            RstStatus::RefusedStream => 3,
            RstStatus::UnsupportedVersion => 4,
            RstStatus::Cancel => 5,
            RstStatus::InternalError => 6,
            RstStatus::FlowControlError => 7,
            RstStatus::StreamInUse => 8,
            RstStatus::StreamAlreadyClosed => 9,
            RstStatus::FrameTooLarge => 11,
            RstStatus::Other(code) => code,
        }
    }
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            RstStatus::ProtocolError => "PROTOCOL_ERROR",
            RstStatus::InvalidStream => "INVALID_STREAM",
            RstStatus::RefusedStream => "REFUSED_STREAM",
            RstStatus::UnsupportedVersion => "UNSUPPORTED_VERSION",
            RstStatus::Cancel => "CANCEL",
            RstStatus::InternalError => "INTERNAL_ERROR",
            RstStatus::FlowControlError => "FLOW_CONTROL_ERROR",
            RstStatus::StreamInUse => "STREAM_IN_USE",
            RstStatus::StreamAlreadyClosed => "STREAM_ALREADY_CLOSED",
            RstStatus::FrameTooLarge => "FRAME_TOO_LARGE",
            RstStatus::Other(code) => return write!(f, "status {code}"),
        };
        f.write_str(name)
    }
}

/// The status code of a GOAWAY frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoAwayStatus {
    /// OK (0): a normal shutdown.
    Ok,
    /// PROTOCOL_ERROR (1).
    ProtocolError,
    /// INTERNAL_ERROR (2).
    InternalError,
    /// Any other code.
    Other(u32),
}

impl GoAwayStatus {
    fn from_code(code: u32) -> GoAwayStatus {
        match code {
            0 => GoAwayStatus::Ok,
            1 => GoAwayStatus::ProtocolError,
            2 => GoAwayStatus::InternalError,
            other => GoAwayStatus::Other(other),
        }
    }

    /// The numeric code on the wire.
    pub fn code(self) -> u32 {
        match self {
            GoAwayStatus::Ok => 0,
            GoAwayStatus::ProtocolError => 1,
            GoAwayStatus::InternalError => 2,
            GoAwayStatus::Other(code) => code,
        }
    }
}

impl fmt::Display for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoAwayStatus::Ok => f.write_str("OK"),
            GoAwayStatus::ProtocolError => f.write_str("PROTOCOL_ERROR"),
            GoAwayStatus::InternalError => f.write_str("INTERNAL_ERROR"),
            GoAwayStatus::Other(code) => write!(f, "status {code}"),
        }
    }
}

/// One entry of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The setting's id (24 bits), e.g. 7 for SETTINGS_INITIAL_WINDOW_SIZE.
    pub id: u32,
    /// FLAG_SETTINGS_PERSIST_VALUE (1) or FLAG_SETTINGS_PERSISTED (2), or 0.
    pub flags: u8,
    /// The value.
    pub value: u32,
}

/// Size limits the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest control frame payload accepted (default 1 MiB).
    pub max_control_frame: usize,
    /// The longest DATA frame payload accepted (default: the 24-bit maximum;
    /// DATA is streamed out in pieces, so this bounds no buffer).
    pub max_data_frame: usize,
    /// The most bytes one header block may decompress to (default 256 KiB).
    /// What a block decodes to has fixed limits of its own, whatever this is:
    /// 256 KiB of names and values (a name counted once per value) and 256
    /// headers ([`FrameError::HeaderListTooLarge`], [`FrameError::TooManyHeaders`]).
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_control_frame: 1 << 20, max_data_frame: MAX_FRAME_LENGTH, max_header_block: 256 << 10 }
    }
}

/// Writes frames, compressing header blocks with this endpoint's context.
pub struct Encoder {
    compressor: HeaderCompressor,
}

impl Encoder {
    /// An encoder with a fresh compression context.
    pub fn new() -> Result<Self, FrameError> {
        Ok(Encoder { compressor: HeaderCompressor::new()? })
    }

    /// Appends `frame` to `dst`. On error nothing is appended.
    pub fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::SynStream { stream_id, associated_stream_id, priority, slot, fin, unidirectional, headers } => {
                check_stream_id("SYN_STREAM", *stream_id)?;
                check_id_bits(*associated_stream_id)?;
                let block = self.header_block(headers)?;
                let flags = flag(*fin, FLAG_FIN) | flag(*unidirectional, FLAG_UNIDIRECTIONAL);
                put_control_header(dst, TYPE_SYN_STREAM, flags, 10 + block.len());
                dst.put_u32(*stream_id);
                dst.put_u32(*associated_stream_id);
                dst.put_u8((priority & 0x07) << 5);
                dst.put_u8(*slot);
                dst.put_slice(&block);
            }
            Frame::SynReply { stream_id, fin, headers } => {
                check_stream_id("SYN_REPLY", *stream_id)?;
                let block = self.header_block(headers)?;
                put_control_header(dst, TYPE_SYN_REPLY, flag(*fin, FLAG_FIN), 4 + block.len());
                dst.put_u32(*stream_id);
                dst.put_slice(&block);
            }
            Frame::Headers { stream_id, fin, headers } => {
                check_stream_id("HEADERS", *stream_id)?;
                let block = self.header_block(headers)?;
                put_control_header(dst, TYPE_HEADERS, flag(*fin, FLAG_FIN), 4 + block.len());
                dst.put_u32(*stream_id);
                dst.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                check_stream_id("RST_STREAM", *stream_id)?;
                if status.code() == 0 {
                    return Err(FrameError::InvalidRstStatus);
                }
                put_control_header(dst, TYPE_RST_STREAM, 0, 8);
                dst.put_u32(*stream_id);
                dst.put_u32(status.code());
            }
            Frame::Settings { clear, settings } => {
                let len = 4 + settings.len().saturating_mul(8);
                if len > MAX_FRAME_LENGTH {
                    return Err(FrameError::FrameTooLarge { len, max: MAX_FRAME_LENGTH });
                }
                put_control_header(dst, TYPE_SETTINGS, flag(*clear, FLAG_CLEAR_SETTINGS), len);
                dst.put_u32(settings.len() as u32);
                for setting in settings {
                    dst.put_u32((u32::from(setting.flags) << 24) | (setting.id & 0xff_ffff));
                    dst.put_u32(setting.value);
                }
            }
            Frame::Ping { id } => {
                put_control_header(dst, TYPE_PING, 0, 4);
                dst.put_u32(*id);
            }
            Frame::GoAway { last_good_stream_id, status } => {
                check_id_bits(*last_good_stream_id)?;
                put_control_header(dst, TYPE_GOAWAY, 0, 8);
                dst.put_u32(*last_good_stream_id);
                dst.put_u32(status.code());
            }
            Frame::WindowUpdate { stream_id, delta } => {
                check_id_bits(*stream_id)?;
                put_control_header(dst, TYPE_WINDOW_UPDATE, 0, 8);
                dst.put_u32(*stream_id);
                dst.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data { stream_id, fin, data } => {
                check_stream_id("DATA", *stream_id)?;
                if data.len() > MAX_FRAME_LENGTH {
                    return Err(FrameError::FrameTooLarge { len: data.len(), max: MAX_FRAME_LENGTH });
                }
                dst.reserve(8 + data.len());
                dst.put_u32(*stream_id);
                dst.put_u32((u32::from(flag(*fin, FLAG_FIN)) << 24) | data.len() as u32);
                dst.put_slice(data);
            }
        }
        Ok(())
    }

    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let raw = encode_block(headers)?;
        let mut compressed = Vec::new();
        self.compressor.compress(&raw, &mut compressed)?;
        Ok(compressed)
    }
}

fn flag(set: bool, bit: u8) -> u8 {
    if set { bit } else { 0 }
}

fn check_id_bits(id: u32) -> Result<(), FrameError> {
    if id > MAX_STREAM_ID { Err(FrameError::StreamIdTooLarge(id)) } else { Ok(()) }
}

fn check_stream_id(frame: &'static str, id: u32) -> Result<(), FrameError> {
    check_id_bits(id)?;
    if id == 0 { Err(FrameError::ZeroStreamId(frame)) } else { Ok(()) }
}

fn put_control_header(dst: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    dst.reserve(8 + len);
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(frame_type);
    dst.put_u32((u32::from(flags) << 24) | (len as u32 & 0xff_ffff));
}

/// Reads frames from bytes as they arrive.
pub struct Decoder {
    limits: Limits,
    decompressor: HeaderDecompressor,
    state: State,
}

enum State {
    /// Expecting a frame header.
    Header,
    /// Inside a DATA frame's payload.
    Data { stream_id: u32, remaining: usize, fin: bool },
    /// Discarding the payload of an unknown control frame.
    Skip { remaining: usize },
}

impl Decoder {
    /// A decoder with a fresh decompression context.
    pub fn new(limits: Limits) -> Self {
        Decoder { limits, decompressor: HeaderDecompressor::new(), state: State::Header }
    }

    /// Takes the next frame off the front of `src`, or returns `Ok(None)` when
    /// more bytes are needed (everything usable has then been consumed or is
    /// kept in `src`).
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Skip { remaining } => {
                    let n = remaining.min(src.len());
                    src.advance(n);
                    if n < remaining {
                        self.state = State::Skip { remaining: remaining - n };
                        return Ok(None);
                    }
                    self.state = State::Header;
                }
                State::Data { stream_id, remaining, fin } => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    let n = remaining.min(src.len());
                    let data = src.split_to(n).freeze();
                    let last = n == remaining;
                    self.state =
                        if last { State::Header } else { State::Data { stream_id, remaining: remaining - n, fin } };
                    return Ok(Some(Frame::Data { stream_id, fin: fin && last, data }));
                }
                State::Header => {
                    let Some(head) = src.first_chunk::<8>() else { return Ok(None) };
                    let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                    let flags = head[4];
                    let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
                    if word & 0x8000_0000 == 0 {
                        let stream_id = word;
                        if stream_id == 0 {
                            return Err(FrameError::ZeroStreamId("DATA"));
                        }
                        if len > self.limits.max_data_frame {
                            return Err(FrameError::FrameTooLarge { len, max: self.limits.max_data_frame });
                        }
                        src.advance(8);
                        let fin = flags & FLAG_FIN != 0;
                        if len == 0 {
                            return Ok(Some(Frame::Data { stream_id, fin, data: Bytes::new() }));
                        }
                        self.state = State::Data { stream_id, remaining: len, fin };
                        continue;
                    }
                    let version = ((word >> 16) & 0x7fff) as u16;
                    if version != VERSION {
                        return Err(FrameError::UnsupportedVersion(version));
                    }
                    let frame_type = (word & 0xffff) as u16;
                    if !(TYPE_SYN_STREAM..=TYPE_WINDOW_UPDATE).contains(&frame_type) || frame_type == 5 {
                        // Unknown (or the obsolete NOOP, 5): ignored, as the draft asks.
                        src.advance(8);
                        self.state = State::Skip { remaining: len };
                        continue;
                    }
                    if len > self.limits.max_control_frame {
                        return Err(FrameError::FrameTooLarge { len, max: self.limits.max_control_frame });
                    }
                    if src.len() < 8 + len {
                        src.reserve(8 + len - src.len());
                        return Ok(None);
                    }
                    src.advance(8);
                    let payload = src.split_to(len);
                    return self.control(frame_type, flags, &payload).map(Some);
                }
            }
        }
    }

    fn control(&mut self, frame_type: u16, flags: u8, payload: &[u8]) -> Result<Frame, FrameError> {
        let fin = flags & FLAG_FIN != 0;
        let mut p = payload;
        match frame_type {
            TYPE_SYN_STREAM => {
                let (fixed, block) = split(p, 10, "SYN_STREAM")?;
                let stream_id = stream_id("SYN_STREAM", &fixed[0..4])?;
                let associated_stream_id = be32(&fixed[4..8]) & MAX_STREAM_ID;
                let headers = self.headers(block)?;
                Ok(Frame::SynStream {
                    stream_id,
                    associated_stream_id,
                    priority: fixed[8] >> 5,
                    slot: fixed[9],
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                })
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let name = if frame_type == TYPE_SYN_REPLY { "SYN_REPLY" } else { "HEADERS" };
                let (fixed, block) = split(p, 4, name)?;
                let stream_id = stream_id(name, fixed)?;
                let headers = self.headers(block)?;
                Ok(if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply { stream_id, fin, headers }
                } else {
                    Frame::Headers { stream_id, fin, headers }
                })
            }
            TYPE_RST_STREAM => {
                exact(p, 8, "RST_STREAM")?;
                let stream_id = stream_id("RST_STREAM", &p[0..4])?;
                let code = be32(&p[4..8]);
                if code == 0 {
                    return Err(FrameError::InvalidRstStatus);
                }
                Ok(Frame::RstStream { stream_id, status: RstStatus::from_code(code) })
            }
            TYPE_SETTINGS => {
                let (count, mut entries) = split(p, 4, "SETTINGS")?;
                let count = be32(count) as usize;
                if entries.len() / 8 != count || entries.len() % 8 != 0 {
                    return Err(FrameError::InvalidLength { frame: "SETTINGS", len: payload.len() });
                }
                let mut settings = Vec::with_capacity(count);
                while entries.has_remaining() {
                    let id = entries.get_u32();
                    let value = entries.get_u32();
                    settings.push(Setting { id: id & 0xff_ffff, flags: (id >> 24) as u8, value });
                }
                Ok(Frame::Settings { clear: flags & FLAG_CLEAR_SETTINGS != 0, settings })
            }
            TYPE_PING => {
                exact(p, 4, "PING")?;
                Ok(Frame::Ping { id: p.get_u32() })
            }
            TYPE_GOAWAY => {
                exact(p, 8, "GOAWAY")?;
                let last_good_stream_id = p.get_u32() & MAX_STREAM_ID;
                Ok(Frame::GoAway { last_good_stream_id, status: GoAwayStatus::from_code(p.get_u32()) })
            }
            _ => {
                exact(p, 8, "WINDOW_UPDATE")?;
                let stream_id = p.get_u32() & MAX_STREAM_ID;
                Ok(Frame::WindowUpdate { stream_id, delta: p.get_u32() & 0x7fff_ffff })
            }
        }
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.decompressor.decompress(compressed, self.limits.max_header_block)?;
        parse_block(&raw)
    }
}

fn be32(bytes: &[u8]) -> u32 {
    bytes.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b))
}

fn split<'a>(p: &'a [u8], at: usize, frame: &'static str) -> Result<(&'a [u8], &'a [u8]), FrameError> {
    p.split_at_checked(at).ok_or(FrameError::InvalidLength { frame, len: p.len() })
}

fn exact(p: &[u8], len: usize, frame: &'static str) -> Result<(), FrameError> {
    if p.len() == len { Ok(()) } else { Err(FrameError::InvalidLength { frame, len: p.len() }) }
}

fn stream_id(frame: &'static str, bytes: &[u8]) -> Result<u32, FrameError> {
    match be32(bytes) & MAX_STREAM_ID {
        0 => Err(FrameError::ZeroStreamId(frame)),
        id => Ok(id),
    }
}

#[cfg(test)]
mod tests;
