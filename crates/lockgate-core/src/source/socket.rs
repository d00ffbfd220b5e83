//! `socket_text_stream`: lines read from a TCP server (`nc -lk 9999` in the README).
//!
//! The receiver connects, reads `\n`-terminated lines and stores them; when the peer
//! closes or the connection fails it reconnects with back-off. Lines longer than the
//! limit are cut and the rest of the line is skipped (counted as truncated).

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::context::StreamingContext;
use crate::error::BoxError;
use crate::metrics::SourceCounters;
use crate::source::receiver::{Receiver, ReceiverContext, ReceiverInputDStream};
use crate::source::{decode_line, DEFAULT_MAX_LINE_BYTES};

/// A [`Receiver`] of text lines from `host:port`.
pub struct SocketTextReceiver {
    host: String,
    port: u16,
    max_line_bytes: usize,
}

impl SocketTextReceiver {
    /// A receiver for `host:port` with the default line limit.
    pub fn new(host: &str, port: u16) -> Self {
        SocketTextReceiver {
            host: host.to_string(),
            port,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Cuts lines longer than `n` bytes.
    pub fn max_line_bytes(mut self, n: usize) -> Self {
        self.max_line_bytes = n.max(1);
        self
    }
}

/// Splits a byte stream into lines across reads.
struct LineAssembler {
    pending: Vec<u8>,
    /// The current line was already cut and stored; skip to its end.
    skipping: bool,
    max: usize,
}

impl LineAssembler {
    fn feed(&mut self, mut data: &[u8], counters: &SourceCounters, out: &mut Vec<String>) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(nl) => {
                    if !self.skipping {
                        self.pending.extend_from_slice(&data[..nl]);
                        out.push(decode_line(&self.pending, self.max, counters));
                    }
                    self.pending.clear();
                    self.skipping = false;
                    data = &data[nl + 1..];
                }
                None => {
                    if !self.skipping {
                        self.pending.extend_from_slice(data);
                        // Keep one extra byte so a trailing '\r' can still be stripped.
                        if self.pending.len() > self.max + 1 {
                            out.push(decode_line(&self.pending, self.max, counters));
                            self.pending.clear();
                            self.skipping = true;
                        }
                    }
                    data = &[];
                }
            }
        }
    }
}

impl Receiver<String> for SocketTextReceiver {
    fn name(&self) -> String {
        "socket".into()
    }

    fn receive(&mut self, ctx: &ReceiverContext<String>) -> Result<(), BoxError> {
        let target = format!("{}:{}", self.host, self.port);
        let addr = target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| format!("`{target}` resolves to no address"))?;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("cannot connect to {target}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        tracing::info!(%target, "socket receiver connected");
        ctx.connected();
        let mut lines = LineAssembler {
            pending: Vec::new(),
            skipping: false,
            max: self.max_line_bytes,
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        while !ctx.is_stopped() {
            match stream.read(&mut buf) {
                Ok(0) => {
                    if !lines.pending.is_empty() && !lines.skipping {
                        out.push(decode_line(&lines.pending, lines.max, ctx.counters()));
                        ctx.store_many(std::mem::take(&mut out));
                    }
                    return Err(format!("{target} closed the connection").into());
                }
                Ok(n) => {
                    lines.feed(&buf[..n], ctx.counters(), &mut out);
                    if !out.is_empty() {
                        ctx.store_many(std::mem::take(&mut out));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(format!("reading from {target}: {e}").into()),
            }
        }
        Ok(())
    }
}

impl StreamingContext {
    /// A stream of the text lines sent by the TCP server at `host:port`.
    pub fn socket_text_stream(&self, host: &str, port: u16) -> ReceiverInputDStream<String> {
        self.receiver_stream(SocketTextReceiver::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_joins_reads_and_cuts_long_lines() {
        let c = SourceCounters::default();
        let mut a = LineAssembler {
            pending: Vec::new(),
            skipping: false,
            max: 4,
        };
        let mut out = Vec::new();
        a.feed(b"ab", &c, &mut out);
        a.feed(b"c\r\nlonglongline", &c, &mut out);
        a.feed(b"more\nok\n", &c, &mut out);
        assert_eq!(out, vec!["abc", "long", "ok"]);
        assert_eq!(SourceCounters::get(&c.truncated_lines), 1);
    }
}
