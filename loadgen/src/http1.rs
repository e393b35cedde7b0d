//! A minimal HTTP/1.1 keep-alive client for the HTTP-side benches
//! (`smq-put`, `search-load`): one request at a time on one connection, as
//! the seeds' clients send them, with no client library's costs in the
//! figures.
//!
//! In: a request (method, path, body). Out: the answer's status and body.
//! Only `Content-Length` bodies are read (the gateway's axum answers carry
//! one); a chunked answer is an error, not a silent misread. Bound: the
//! request and body buffers grow to the largest message, at most
//! [`MAX_BODY_BYTES`].

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An answer body longer than this is a broken stream, not an answer.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// One keep-alive connection to `host`.
pub struct Http1 {
    conn: BufReader<TcpStream>,
    host: String,
    request: Vec<u8>,
    line: String,
}

impl Http1 {
    /// Connects to `addr` (`host:port`), Nagle off.
    pub async fn connect(addr: &str) -> std::io::Result<Http1> {
        let conn = TcpStream::connect(addr).await?;
        conn.set_nodelay(true)?;
        Ok(Http1 {
            conn: BufReader::new(conn),
            host: addr.to_owned(),
            request: Vec::with_capacity(512),
            line: String::new(),
        })
    }

    /// Sends `method path` with `body` (no `Content-Type`: the endpoints
    /// measured read raw bytes) and reads the answer's body into `answer`; returns its status.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        answer: &mut Vec<u8>,
    ) -> std::io::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
                self.host,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        self.conn.get_mut().write_all(&self.request).await?;
        self.read_answer(answer).await
    }

    /// Reads one answer: status line, headers, a `Content-Length` body.
    async fn read_answer(&mut self, body: &mut Vec<u8>) -> std::io::Result<u16> {
        self.line.clear();
        if self.conn.read_line(&mut self.line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = self
            .line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.conn.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(std::io::Error::other(format!(
                        "a {} answer: only Content-Length bodies are read",
                        value.trim()
                    )));
                }
            }
        }
        if length > MAX_BODY_BYTES {
            return Err(std::io::Error::other(format!("a {length}-byte answer")));
        }
        body.clear();
        body.resize(length, 0);
        self.conn.read_exact(body).await?;
        Ok(status)
    }
}
