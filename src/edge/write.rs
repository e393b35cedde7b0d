//! Writes to a client socket, each under [`WRITE_TIMEOUT`], so a client
//! that stops reading cannot hold its connection's task forever.
//!
//! In: bytes or a packet for one socket. Out: written, or an error (the
//! caller closes). Bound: what is written now comes from the caller's
//! buffer; only a write that must wait is boxed, with what is left.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec;

/// A write to a client that takes longer than this closes the connection:
/// a client that stops reading must not hold its task forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The rest of a write the socket could not take at once.
pub type WriteRest<'b> = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'b>>;

/// Writes what the socket takes now (almost always all of `bytes`); the
/// rest, if any, is written by the returned future under
/// [`WRITE_TIMEOUT`], boxed so that waiting for room does not enlarge every
/// connection's task.
pub fn write_now<'b>(
    stream: &'b mut TcpStream,
    bytes: &'b [u8],
) -> std::io::Result<Option<WriteRest<'b>>> {
    let written = match stream.try_write(bytes) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok(match bytes.get(written..) {
        Some(rest) if !rest.is_empty() => Some(Box::pin(write_all_timed(stream, rest))),
        _ => None,
    })
}

pub async fn write_all_timed<W: AsyncWrite + Unpin, B: AsRef<[u8]>>(
    writer: &mut W,
    bytes: B,
) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes.as_ref())).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Encodes and writes one packet, under [`WRITE_TIMEOUT`].
pub async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
    packet: &Packet,
) -> std::io::Result<()> {
    out.clear();
    codec::encode(packet, out).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    write_all_timed(writer, out).await
}
