//! A client's connection as the edge reads and writes it: plain TCP
//! (`mqtt.listen`) or TLS (`tls.mqtt_listen`).
//!
//! In: bytes from the client. Out: bytes to it. Bound: a read grows the
//! caller's buffer only once data is there, so an idle plain connection
//! holds no read buffer; a TLS connection holds rustls' buffers
//! ([`crate::tls::config::CONNECTION_BYTES`]) and its task is larger by a
//! pointer (the TLS state is boxed).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::{Accepted, TlsSlot};

/// What the edge needs of a client connection beyond `AsyncRead` and
/// `AsyncWrite`: reads that allocate only when data is there, and writes
/// that never wait (what cannot go now is boxed by the caller).
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Reads what the connection has into `buf`, reserving `chunk` more
    /// bytes first only once it is readable. `Ok(0)`: closed by the peer.
    fn poll_read_some(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        chunk: usize,
    ) -> Poll<io::Result<usize>>;

    /// Writes what the connection takes now, without waiting: 0 when it
    /// takes nothing.
    fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize>;

    /// Does something written still wait to reach the socket (TLS records
    /// rustls holds)? Then the caller flushes it under its write timeout.
    fn needs_flush(&self) -> bool;

    fn peer_addr(&self) -> Option<SocketAddr>;

    /// The subject of the client's verified TLS certificate, if any.
    fn certificate_identity(&self) -> Option<&str>;
}

impl ClientStream for TcpStream {
    fn poll_read_some(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        chunk: usize,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_read_ready(cx))?;
            buf.reserve(chunk);
            match self.try_read_buf(buf) {
                // Readiness was stale: tokio cleared it; poll again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self.try_write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            result => result,
        }
    }

    fn needs_flush(&self) -> bool {
        false
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        TcpStream::peer_addr(self).ok()
    }

    fn certificate_identity(&self) -> Option<&str> {
        None
    }
}

/// A client on the MQTT TLS port, with its place under
/// `tls.max_connections`.
pub struct TlsClient {
    stream: Box<tokio_rustls::server::TlsStream<TcpStream>>,
    identity: Option<Box<str>>,
    _slot: TlsSlot,
}

/// Decrypted bytes read per call: a vehicle's packets are small, and what
/// a larger record holds is read by the next call.
const TLS_READ_BYTES: usize = 4096;

impl TlsClient {
    pub fn new(accepted: Accepted, identity_is_username: bool) -> Self {
        TlsClient {
            stream: accepted.stream,
            identity: accepted.identity.filter(|_| identity_is_username),
            _slot: accepted.slot,
        }
    }
}

impl ClientStream for TlsClient {
    fn poll_read_some(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        _chunk: usize,
    ) -> Poll<io::Result<usize>> {
        // Read into the stack, not `buf`: the buffer is reserved only when
        // there is something to put in it.
        let mut stack = [0u8; TLS_READ_BYTES];
        let mut read = ReadBuf::new(&mut stack);
        ready!(Pin::new(&mut *self.stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    }

    fn try_write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // A poll that must not wait: a pending write registers a waker that
        // wakes nobody, and the caller's own write registers its own.
        let mut cx = Context::from_waker(Waker::noop());
        let written = match Pin::new(&mut *self.stream).poll_write(&mut cx, bytes) {
            Poll::Ready(result) => result?,
            Poll::Pending => 0,
        };
        if let Poll::Ready(Err(e)) = Pin::new(&mut *self.stream).poll_flush(&mut cx) {
            return Err(e);
        }
        Ok(written)
    }

    fn needs_flush(&self) -> bool {
        self.stream.get_ref().1.wants_write()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.get_ref().0.peer_addr().ok()
    }

    fn certificate_identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }
}

impl AsyncRead for TlsClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsClient {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.stream).poll_shutdown(cx)
    }
}
