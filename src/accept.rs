//! The one accept step every listener of the gateway shares (the edge, the
//! HTTP server, the SMQ consumer port).
//!
//! In: the result of `TcpListener::accept`. Out: the connection, or `None`
//! after a short back-off when accepting failed. Bound: no state.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a listener waits after a failed accept.
const BACK_OFF: Duration = Duration::from_millis(50);

/// The accepted connection; on an error (usually EMFILE: out of file
/// descriptors) logs it, waits [`BACK_OFF`] instead of spinning, and gives
/// `None` so the caller's loop goes round again.
pub async fn or_back_off(
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    listener: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Ok(connection) => Some(connection),
        Err(e) => {
            tracing::warn!(listener, error = %e, "accept failed; backing off");
            tokio::time::sleep(BACK_OFF).await;
            None
        }
    }
}
