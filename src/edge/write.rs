//! Writes to a client socket, each under [`WRITE_TIMEOUT`], so a client
//! that stops reading cannot hold its connection's task forever.
//!
//! In: bytes or a packet for one socket. Out: written, or an error (the
//! caller closes). Bound: what is written now comes from the caller's
//! buffer; only a write that must wait is boxed, with what is left.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::codec;
use super::stream::ClientStream;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A write to a client that takes longer than this closes the connection:
/// a client that stops reading must not hold its task forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The rest of a write the socket could not take at once.
pub type WriteRest<'b> = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + 'b>>;

/// Writes what the socket takes now (almost always all of `bytes`); the
/// rest, if any, is written by the returned future under
/// [`WRITE_TIMEOUT`], boxed so that waiting for room does not enlarge every
/// connection's task.
pub fn write_now<'b, S: ClientStream>(
    stream: &'b mut S,
    bytes: &'b [u8],
) -> std::io::Result<Option<WriteRest<'b>>> {
    let written = stream.try_write_now(bytes)?;
    let rest = bytes.get(written..).unwrap_or_default();
    Ok(match rest.is_empty() && !stream.needs_flush() {
        true => None,
        false => Some(Box::pin(write_all_timed(stream, rest))),
    })
}

/// Writes all of `bytes` and flushes (a TLS stream holds records until
/// then; for TCP a flush is nothing), under [`WRITE_TIMEOUT`].
pub async fn write_all_timed<W: AsyncWrite + Unpin, B: AsRef<[u8]>>(
    writer: &mut W,
    bytes: B,
) -> std::io::Result<()> {
    let write = async {
        writer.write_all(bytes.as_ref()).await?;
        writer.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
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
