//! Internode framing: a 4-byte big-endian length, then that many bytes.
//!
//! tokio-util's `LengthDelimitedCodec` (what this replaces) answers a
//! length over its limit with an error that ends the stream, so one
//! oversize frame closed the connection and failed every other call
//! sharing it. Here an oversize frame is what the caller chooses:
//!
//! * **strict** (the handshake, before the peer is authenticated): an
//!   error, and the connection is closed — nothing from an unknown peer is
//!   worth reading past the handshake limit;
//! * **skipping** (after the handshake): its bytes are read and discarded
//!   by length, [`Frame::Skipped`] reports it once with its first bytes,
//!   and the next frame is read as usual. The connection survives; the
//!   call the frame belonged to fails with a typed error (the transport
//!   reads its id from those bytes: `wire::skipped_call`).
//!
//! Senders check sizes before queueing (`Net::encode`), so a skipped frame
//! means a peer configured with a larger limit than this node's: nodes of
//! one cluster must share `--max-key-bytes` (docs/OPERATIONS.md).

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length prefix.
const HEADER: usize = 4;

/// One item read off a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole frame's bytes.
    Data(BytesMut),
    /// A frame of `len` bytes, over the limit: being discarded. `head` is
    /// what of its start had arrived (at most [`HEAD`] bytes), enough to
    /// tell which call it belonged to.
    Skipped {
        /// The frame's length.
        len: usize,
        /// Its first bytes.
        head: Bytes,
    },
}

/// Bytes of a skipped frame kept to identify it: an envelope's variant
/// name and its id come first.
pub const HEAD: usize = 32;

/// The codec of internode connections; see the module docs.
#[derive(Debug)]
pub struct FrameCodec {
    max: usize,
    /// Skip oversize frames instead of failing the stream.
    skip: bool,
    /// Bytes of an oversize frame still to discard.
    discarding: usize,
}

impl FrameCodec {
    /// A codec that fails on a frame over `max` bytes (the handshake's).
    pub fn strict(max: usize) -> FrameCodec {
        FrameCodec {
            max,
            skip: false,
            discarding: 0,
        }
    }

    /// From now on, frames up to `max` bytes, and larger ones skipped:
    /// what an authenticated connection uses.
    pub fn skipping(&mut self, max: usize) {
        self.max = max;
        self.skip = true;
    }
}

fn too_big(len: usize, max: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("frame of {len} bytes exceeds the limit of {max}"),
    )
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if self.discarding > 0 {
            let n = self.discarding.min(src.len());
            src.advance(n);
            self.discarding -= n;
            if self.discarding > 0 {
                return Ok(None);
            }
        }
        if src.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max {
            if !self.skip {
                return Err(too_big(len, self.max));
            }
            // Its first bytes say whose call it was: wait for them.
            let keep = HEAD.min(len);
            if src.len() < HEADER + keep {
                return Ok(None);
            }
            src.advance(HEADER);
            let head = Bytes::copy_from_slice(&src[..keep]);
            let n = len.min(src.len());
            src.advance(n);
            self.discarding = len - n;
            return Ok(Some(Frame::Skipped { len, head }));
        }
        if src.len() < HEADER + len {
            // Room for the rest, so the reads that follow need not grow
            // the buffer piecemeal.
            src.reserve(HEADER + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER);
        Ok(Some(Frame::Data(src.split_to(len))))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        // Callers check first (`Net::encode`): reaching this is a bug, and
        // failing the stream beats sending what the peer cannot read.
        if item.len() > self.max {
            return Err(too_big(item.len(), self.max));
        }
        dst.reserve(HEADER + item.len());
        dst.put_u32(item.len() as u32);
        dst.extend_from_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> BytesMut {
        let mut out = BytesMut::new();
        for p in payloads {
            out.put_u32(p.len() as u32);
            out.extend_from_slice(p);
        }
        out
    }

    /// Feeds `bytes` to the codec `step` bytes at a time, as a socket
    /// would; returns every item decoded.
    fn decode_in_steps(codec: &mut FrameCodec, bytes: &[u8], step: usize) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).expect("no error when skipping") {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn an_oversize_frame_is_skipped_and_the_next_one_read() {
        let big = vec![7u8; 100];
        let bytes = framed(&[b"first", &big, b"after"]);
        for step in [1, 3, 7, 64, 1000] {
            let mut codec = FrameCodec::strict(16);
            codec.skipping(16);
            let got = decode_in_steps(&mut codec, &bytes, step);
            assert_eq!(
                got,
                vec![
                    Frame::Data(BytesMut::from(&b"first"[..])),
                    Frame::Skipped {
                        len: 100,
                        head: Bytes::from(vec![7u8; HEAD]),
                    },
                    Frame::Data(BytesMut::from(&b"after"[..])),
                ],
                "fed {step} bytes at a time"
            );
        }
    }

    #[test]
    fn before_the_handshake_an_oversize_frame_is_an_error() {
        let mut codec = FrameCodec::strict(16);
        let mut buf = framed(&[&[0u8; 17]]);
        assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn frames_at_the_limit_pass_both_ways_and_larger_ones_are_not_written() {
        let mut codec = FrameCodec::strict(8);
        codec.skipping(8);
        let mut buf = BytesMut::new();
        codec
            .encode(Bytes::from_static(b"12345678"), &mut buf)
            .expect("at the limit");
        assert!(
            codec
                .encode(Bytes::from_static(b"123456789"), &mut buf)
                .is_err()
        );
        assert_eq!(
            codec.decode(&mut buf).expect("decodes"),
            Some(Frame::Data(BytesMut::from(&b"12345678"[..])))
        );
        assert!(buf.is_empty());
    }
}
