//! Reading a backend's replies line by line during establishment and the auth replay,
//! for every interactive protocol (IMAP, POP3, ManageSieve, submission).
//!
//! [`Lines`] keeps what it read past the last line: once the backend accepted the
//! login, those bytes belong to the client and go out before the relay starts
//! ([`Lines::into_rest`]). Lines are bounded ([`MAX_REPLY_LINE`]); a longer one, EOF or
//! a read error ends the dialogue with the backend.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::proto::grammar::trailing_literal;

/// Longest backend reply line (CRLF included) accepted before authentication.
pub const MAX_REPLY_LINE: usize = 64 * 1024;
/// Largest literal accepted inside a backend reply before authentication.
pub const MAX_REPLY_LITERAL: usize = 64 * 1024;
/// Bytes asked for per read.
const READ_CHUNK: usize = 4096;

/// A buffered line reader over a backend stream it does not own.
#[derive(Debug, Default)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    pub fn new() -> Lines {
        Lines::default()
    }

    /// The next line, CRLF (or bare LF) included. EOF, a read error and an overlong
    /// line are errors (`UnexpectedEof`, the error, `InvalidData`).
    pub async fn read_line<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos + 1;
                let rest = self.buf.split_off(end);
                return Ok(std::mem::replace(&mut self.buf, rest));
            }
            scanned = self.buf.len();
            if scanned >= MAX_REPLY_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend reply line too long",
                ));
            }
            self.fill(stream, READ_CHUNK).await?;
        }
    }

    /// Exactly `n` bytes (an IMAP literal inside a reply).
    pub async fn read_exact<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        n: usize,
    ) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            let want = (n - self.buf.len()).min(64 * 1024);
            self.fill(stream, want).await?;
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One response of the IMAP family (IMAP, ManageSieve): a line, plus every literal
    /// it announces at its end (`* ID ("name" {5}\r\nvalue)`) and the line text that
    /// follows each, as one byte string. Literals are bounded by [`MAX_REPLY_LITERAL`].
    pub async fn read_response<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> io::Result<Vec<u8>> {
        let mut response = self.read_line(stream).await?;
        while let Some(size) = trailing_literal(&response) {
            if size > MAX_REPLY_LITERAL || response.len() > MAX_REPLY_LITERAL {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "backend reply literal too large",
                ));
            }
            let data = self.read_exact(stream, size).await?;
            response.extend_from_slice(&data);
            let more = self.read_line(stream).await?;
            response.extend_from_slice(&more);
        }
        Ok(response)
    }

    /// Bytes read past the last line handed out.
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }

    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S, want: usize) -> io::Result<()> {
        let old = self.buf.len();
        self.buf.resize(old + want, 0);
        let n = match stream.read(&mut self.buf[old..]).await {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(e);
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed the connection",
            ));
        }
        Ok(())
    }
}

/// The line without its CRLF (or LF).
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_split_anywhere_and_keep_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in [&b"* OK he"[..], b"llo\r\nA1 OK", b" done\r\nextra"] {
                a.write_all(chunk).await.expect("write");
            }
            a
        });
        let mut lines = Lines::new();
        assert_eq!(
            lines.read_line(&mut b).await.expect("line"),
            b"* OK hello\r\n"
        );
        assert_eq!(
            lines.read_line(&mut b).await.expect("line"),
            b"A1 OK done\r\n"
        );
        let _a = writer.await.expect("writer");
        // "extra" may or may not have been read yet; what was read is kept.
        let rest = lines.into_rest();
        assert!(b"extra".starts_with(&rest));
    }

    #[tokio::test]
    async fn eof_and_overlong_lines_are_errors() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let err = Lines::new().read_line(&mut b).await.expect_err("eof");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        let long = vec![b'x'; MAX_REPLY_LINE + 10];
        let mut reader = &long[..];
        let err = Lines::new().read_line(&mut reader).await.expect_err("long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn literal_bytes_are_read_exactly() {
        let data = b"{5}\r\nab\r\ncd tail\r\n";
        let mut reader = &data[..];
        let mut lines = Lines::new();
        assert_eq!(
            lines.read_line(&mut reader).await.expect("line"),
            b"{5}\r\n"
        );
        assert_eq!(
            lines.read_exact(&mut reader, 5).await.expect("lit"),
            b"ab\r\nc"
        );
        assert_eq!(
            lines.read_line(&mut reader).await.expect("line"),
            b"d tail\r\n"
        );
        assert_eq!(trim_eol(b"x\r\n"), b"x");
    }
}
