//! rumqttd's internal listener, where the edge hands clients over.
//!
//! In: nothing but the address chosen. Out: a free loopback port below the
//! ephemeral range, the login only the edge knows, Nagle off on rumqttd's
//! listening socket, and a probe that says when rumqttd answers. Bound: no
//! state; the probe tries 200 times, 10 ms apart.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::time::Duration;

use super::BrokerError;

/// The user name and password rumqttd accepts, and only from the edge: a
/// per-process secret of 256 random bits, never written anywhere, so a local
/// process that finds the internal port still cannot bypass the edge.
#[derive(Clone)]
pub struct InternalLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for InternalLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl InternalLogin {
    /// A fresh login with a new secret.
    pub fn generate() -> InternalLogin {
        let mut secret = [0u8; 32];
        // The kernel's randomness; should /dev/urandom be unreadable,
        // std's per-process hash keys (themselves seeded from it).
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret));
        if from_kernel.is_err() {
            use std::hash::{BuildHasher, Hasher};
            for chunk in secret.chunks_mut(8) {
                let word = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
            }
        }
        InternalLogin {
            username: "fleetgate-edge".to_owned(),
            password: secret.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Turns Nagle's algorithm off on rumqttd's internal listener, found among
/// this process's sockets by its address; Linux gives every socket it
/// accepts the listener's TCP_NODELAY. rumqttd never sets TCP_NODELAY, so
/// its small writes to the edge (PUBACKs, publishes to a dashboard) waited
/// for the edge's delayed ACK: p99 of 30–45 ms at 10 000 msg/s with the
/// gateway at 40 % CPU (benches/compare.sh, fan-in-max). Returns whether
/// the listener was found.
// The workspace denies `unsafe_code`; this is the product's one exception:
// rumqttd owns the listener and exposes neither it nor its fd, so the only
// way to reach the socket is to borrow its descriptor from /proc/self/fd.
#[allow(unsafe_code)]
pub(super) fn set_nodelay_on_listener(addr: SocketAddr) -> bool {
    use std::os::fd::BorrowedFd;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` is an open socket of this process, listed just now,
        // and is only borrowed for the two calls below. rumqttd's listener
        // lives as long as the process; were another socket closed and its
        // number reused in between, the address check below skips it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let bound_here = socket.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr);
        let listening = socket.is_listener().unwrap_or(false);
        if bound_here && listening {
            return socket.set_tcp_nodelay(true).is_ok();
        }
    }
    false
}

/// A free loopback port for rumqttd's internal listener.
///
/// rumqttd binds its listener itself and cannot report the port it got, so
/// the port must be chosen before it binds. Taken from port 0 (the
/// ephemeral range), it could be handed to any other socket bound to port 0
/// in the moment between our check and rumqttd's bind — and then clients
/// would be spliced to someone else's listener. So the port is drawn at
/// random from below the ephemeral range, where port-0 binds never land,
/// and checked free.
pub(super) fn internal_port() -> std::io::Result<SocketAddr> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32_768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1_000 {
        let span = u64::from(ephemeral_low - LOWEST);
        for _ in 0..64 {
            // RandomState is seeded per instance: a random number without a crate.
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = LOWEST + (random % span) as u16;
            if let Ok(listener) = StdTcpListener::bind(("127.0.0.1", port)) {
                return listener.local_addr();
            }
        }
    }
    // No room below the ephemeral range: fall back to an ephemeral port.
    StdTcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr())
}

/// Waits until rumqttd answers a CONNECT on `addr` (then says goodbye
/// properly, so rumqttd logs no error for the probe).
pub(super) async fn wait_until_listening(
    addr: SocketAddr,
    login: &InternalLogin,
) -> Result<(), BrokerError> {
    use rumqttc::mqttbytes::v4::{Connect, Packet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut hello = bytes::BytesMut::new();
    let mut connect = Connect::new("fleetgate-startup-probe");
    connect.keep_alive = 10;
    connect.set_login(&login.username, &login.password);
    let encoded = Packet::Connect(connect)
        .write(&mut hello, usize::MAX)
        .and_then(|_| Packet::Disconnect.write(&mut hello, usize::MAX));
    if encoded.is_err() {
        return Err(BrokerError::NotListening(addr));
    }
    for _ in 0..200 {
        if let Ok(mut probe) = tokio::net::TcpStream::connect(addr).await {
            let mut connack = [0u8; 4];
            let answered = async {
                probe.write_all(&hello[..hello.len() - 2]).await?;
                probe.read_exact(&mut connack).await?;
                probe.write_all(&hello[hello.len() - 2..]).await
            };
            if tokio::time::timeout(Duration::from_secs(2), answered)
                .await
                .is_ok_and(|r| r.is_ok())
                && connack[0] == 0x20
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BrokerError::NotListening(addr))
}
