//! The consumer port: the seed's line protocol over TCP.
//!
//! In: connections on `smq.listen`, each sending `SUB <topic> <channel>`,
//! then `GET` and `FIN <id>` / `REQ <id>` in turn. Out: frames
//! (`protocol`): a message for each `GET`, an error string for a bad
//! command, nothing for a good `SUB`, `FIN` or `REQ`.
//!
//! A connection's turns, as in the seed: `SUB` once; then `GET`, which
//! waits until the channel has a message; then `FIN` or `REQ` of that
//! message before the next `GET`. So each consumer holds at most one
//! message in flight. Where the seed left a client stuck, fleetgate keeps
//! it going: a message held past `smq.msg_timeout_s` is requeued and the
//! consumer may `GET` again; its late `FIN`/`REQ` of that message is taken
//! silently (an answer would be read as the next `GET`'s frame by the
//! seed's client). A connection that ends holding a message requeues it
//! at once.
//!
//! # With a password file
//!
//! A consumer logs in first: `AUTH <user> <password>`, a user of the
//! password file, answered with the frame `OK`; a wrong login gets
//! `E_AUTH_FAILED`, any other first command `E_AUTH_FIRST`, and the
//! connection closes (`smq_refused_total{reason="bad_credentials"|
//! "auth_first"}`). An SMQ topic *is* the broker's MQTT topic of that name
//! (`/put` reaches `mosquitto_sub -t T`, MQTT publishes to T reach the
//! channels), so `SUB T` is checked as that user reading MQTT topic T,
//! with its role and the ACL, as the edge checks an MQTT subscriber: a
//! refusal is `E_UNAUTHORIZED` (`smq_refused_total{reason="not_authorized"}`,
//! `acl_denied_total`) and the consumer may `SUB` to another topic. Each
//! `GET` checks again, so a reload (SIGHUP) that takes the right away, or
//! removes the user, ends the connection with `E_UNAUTHORIZED` at its next
//! `GET`. Without a password file nothing changes: no `AUTH` is needed,
//! and one is answered `OK` without a check (as an MQTT login is then).
//!
//! Bound: at most `smq.max_consumers` connections (one more is sent
//! `E_TOO_MANY_CONSUMERS` and closed); each reads into a buffer of
//! [`READ_BUFFER_BYTES`] and a line longer than [`MAX_LINE_BYTES`] gets
//! `E_INVALID` and the connection closed; it holds at most one message and
//! the frame being written. Timeouts: the first line within
//! `smq.handshake_timeout_ms`, then a command within `smq.idle_timeout_s`
//! whenever the gateway waits for one (a waiting `GET` does not count;
//! TCP keep-alive finds a peer that vanished), each reply taken within
//! `smq.write_timeout_ms`. Every close for a bound is counted.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::hub::{ConsumerSlot, Hub, Requeue, Subscription};
use super::protocol::{self, Command, SmqError};
use super::queue::Entry;
use crate::auth::{Decision, Principal};
use crate::metrics::Metrics;

/// The longest command line.
pub const MAX_LINE_BYTES: usize = 1024;
/// What a connection reads ahead (pipelined commands).
pub const READ_BUFFER_BYTES: usize = 2 * MAX_LINE_BYTES;
/// How long, and how much, a closing connection still reads ([`Conn::linger`]).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Accepts consumers until `shutdown` resolves; then drops them all.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Some((stream, _)) = crate::accept::or_back_off(accepted, "smq").await else {
                    continue;
                };
                match hub.admit_consumer() {
                    Some(slot) => {
                        connections.spawn(connection(stream, hub.clone(), slot));
                    }
                    None => {
                        // A fresh socket takes these few bytes at once.
                        let frame = protocol::frame(&[SmqError::TooManyConsumers.to_string().as_bytes()]);
                        let _ = stream.try_write(&frame);
                    }
                }
            }
        }
    }
}

/// Why a connection ended.
enum Closed {
    Peer,
    HandshakeTimeout,
    IdleTimeout,
    WriteTimeout,
    LineTooLong,
    /// A login or a topic refused (counted where it was decided).
    Refused,
}

enum Next {
    Line(String),
    NotUtf8,
    HeldTooLong,
    Closed(Closed),
}

struct Conn {
    stream: TcpStream,
    buf: Box<[u8; READ_BUFFER_BYTES]>,
    filled: usize,
    hub: Arc<Hub>,
}

impl Conn {
    /// Takes one line out of the buffer, if a whole one is there.
    fn take_line(&mut self) -> Option<Result<String, ()>> {
        let end = self.buf[..self.filled].iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.buf[..end]
            .iter()
            .copied()
            .filter(|&b| b != b'\r')
            .collect();
        self.buf.copy_within(end + 1..self.filled, 0);
        self.filled -= end + 1;
        Some(String::from_utf8(line).map_err(drop))
    }

    /// Reads more; false when the peer is gone.
    async fn read_more(&mut self) -> bool {
        match self.stream.read(&mut self.buf[self.filled..]).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.filled += n;
                true
            }
        }
    }

    async fn next(
        &mut self,
        idle_until: Instant,
        held_until: Option<Instant>,
        first: bool,
    ) -> Next {
        loop {
            match self.take_line() {
                Some(Ok(line)) if line.len() <= MAX_LINE_BYTES => return Next::Line(line),
                Some(Ok(_)) => return Next::Closed(Closed::LineTooLong),
                Some(Err(())) => return Next::NotUtf8,
                None if self.filled > MAX_LINE_BYTES => return Next::Closed(Closed::LineTooLong),
                None => {}
            }
            let held = async {
                match held_until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                more = self.read_more() => if !more { return Next::Closed(Closed::Peer) },
                _ = tokio::time::sleep_until(idle_until) => {
                    return Next::Closed(if first { Closed::HandshakeTimeout } else { Closed::IdleTimeout });
                }
                _ = held => return Next::HeldTooLong,
            }
        }
    }

    async fn send(&mut self, parts: &[&[u8]]) -> Result<(), Closed> {
        // One write per frame: the seed's client reads a frame's payload
        // with a single read.
        let frame = protocol::frame(parts);
        let timeout = Duration::from_millis(self.hub.config().write_timeout_ms);
        match tokio::time::timeout(timeout, self.stream.write_all(&frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Closed::Peer),
            Err(_) => Err(Closed::WriteTimeout),
        }
    }

    async fn error(&mut self, e: SmqError) -> Result<(), Closed> {
        self.send(&[e.to_string().as_bytes()]).await
    }

    /// Before closing on a client that may still be sending: our FIN, then
    /// what it sends is read and discarded for a moment, so that closing
    /// with unread bytes (a reset) does not destroy the error just sent.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let drain = async {
            let mut total = 0;
            while total < LINGER_BYTES {
                match self.stream.read(&mut self.buf[..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// `GET`: waits for a message, watching for the peer leaving meanwhile.
    async fn wait_for_message(&mut self, sub: &Subscription) -> Option<Entry> {
        let hub = self.hub.clone();
        loop {
            let room = self.filled < READ_BUFFER_BYTES;
            tokio::select! {
                entry = hub.take(sub) => return Some(entry),
                more = self.read_more(), if room => if !more { return None },
            }
        }
    }
}

/// What the connection holds: its user, its channel, and the message it
/// took.
struct Turn {
    /// Who logged in with `AUTH`; `None` before, or without a password file.
    principal: Option<Principal>,
    sub: Option<Subscription>,
    held: Option<(Entry, Instant)>,
    /// The last message requeued for being held too long.
    expired: Option<[u8; 16]>,
}

async fn connection(stream: TcpStream, hub: Arc<Hub>, _slot: ConsumerSlot) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let mut conn = Conn {
        stream,
        buf: Box::new([0; READ_BUFFER_BYTES]),
        filled: 0,
        hub: hub.clone(),
    };
    let mut turn = Turn {
        principal: None,
        sub: None,
        held: None,
        expired: None,
    };
    let closed = serve_turns(&mut conn, &mut turn).await;
    if let Some(sub) = turn.sub.take() {
        if let Some((entry, _)) = turn.held.take() {
            hub.requeue(&sub, entry, Requeue::Disconnect);
        }
        hub.leave(sub);
    }
    let m = hub.metrics();
    let counter = match closed {
        Closed::Peer => return,
        Closed::Refused => None,
        Closed::HandshakeTimeout => Some(&m.smq_connections_closed_total_handshake_timeout),
        Closed::IdleTimeout => Some(&m.smq_connections_closed_total_idle_timeout),
        Closed::WriteTimeout => Some(&m.smq_connections_closed_total_write_timeout),
        Closed::LineTooLong => Some(&m.smq_connections_closed_total_line_too_long),
    };
    if let Some(counter) = counter {
        Metrics::inc(counter);
    }
    conn.linger().await;
}

async fn serve_turns(conn: &mut Conn, turn: &mut Turn) -> Closed {
    let config = conn.hub.config().clone();
    let handshake = Duration::from_millis(config.handshake_timeout_ms);
    let idle = Duration::from_secs(config.idle_timeout_s);
    let msg_timeout = Duration::from_secs(config.msg_timeout_s);
    let mut first = true;
    let mut idle_until = Instant::now() + handshake;
    loop {
        let held_until = turn.held.as_ref().map(|(_, at)| *at);
        let line = match conn.next(idle_until, held_until, first).await {
            Next::Line(line) => line,
            Next::NotUtf8 => {
                if let Err(c) = conn.error(SmqError::Invalid).await {
                    return c;
                }
                continue;
            }
            Next::HeldTooLong => {
                if let (Some(sub), Some((entry, _))) = (&turn.sub, turn.held.take()) {
                    turn.expired = Some(entry.id);
                    conn.hub.requeue(sub, entry, Requeue::Timeout);
                }
                continue;
            }
            Next::Closed(Closed::LineTooLong) => {
                let _ = conn.error(SmqError::Invalid).await;
                return Closed::LineTooLong;
            }
            Next::Closed(c) => return c,
        };
        first = false;
        idle_until = Instant::now() + idle;
        let reply = match protocol::parse(&line) {
            Err(e) => Some(Reply::Error(e)),
            Ok(command) => run(conn, turn, command, msg_timeout).await,
        };
        match reply {
            Some(Reply::Error(e)) => {
                if let Err(c) = conn.error(e).await {
                    return c;
                }
            }
            Some(Reply::Close(c)) => return c,
            Some(Reply::Refuse(e)) => {
                let _ = conn.error(e).await;
                return Closed::Refused;
            }
            None => {}
        }
    }
}

enum Reply {
    Error(SmqError),
    /// The connection ends (the peer left, or a reply did not go out).
    Close(Closed),
    /// The error goes out, then the connection ends (a refused login).
    Refuse(SmqError),
}

impl From<SmqError> for Option<Reply> {
    fn from(e: SmqError) -> Self {
        Some(Reply::Error(e))
    }
}

async fn run(
    conn: &mut Conn,
    turn: &mut Turn,
    command: Command<'_>,
    msg_timeout: Duration,
) -> Option<Reply> {
    let hub = conn.hub.clone();
    let m = hub.metrics();
    let auth = hub.auth();
    if let Command::Auth { user, password } = command {
        return login(conn, turn, user, password).await;
    }
    if turn.principal.is_none() && auth.checks_passwords() {
        Metrics::inc(&m.smq_refused_total_auth_first);
        return Some(Reply::Refuse(SmqError::AuthFirst));
    }
    match command {
        Command::Auth { .. } => SmqError::Invalid.into(),
        Command::Sub { topic, channel } => {
            if turn.sub.is_some() {
                return SmqError::Invalid.into();
            }
            match auth.may_read_as(turn.principal.as_ref(), topic) {
                Decision::Allow => {}
                decision => {
                    tracing::debug!(?decision, %topic, "smq: SUB denied by the ACL");
                    Metrics::inc(&m.smq_refused_total_not_authorized);
                    Metrics::inc(&m.acl_denied_total);
                    return Some(match decision {
                        Decision::Revoked => Reply::Refuse(SmqError::Unauthorized),
                        _ => Reply::Error(SmqError::Unauthorized),
                    });
                }
            }
            match hub.subscribe(topic, channel) {
                Ok(sub) => {
                    turn.sub = Some(sub);
                    None
                }
                Err(e) => e.into(),
            }
        }
        Command::Get => {
            let Some(sub) = turn.sub.as_ref().filter(|_| turn.held.is_none()) else {
                return SmqError::Invalid.into();
            };
            // Again at each GET: a reload may have taken the right away.
            if !auth
                .may_read_as(turn.principal.as_ref(), sub.topic())
                .allowed()
            {
                Metrics::inc(&m.smq_refused_total_not_authorized);
                Metrics::inc(&m.acl_denied_total);
                return Some(Reply::Refuse(SmqError::Unauthorized));
            }
            let Some(entry) = conn.wait_for_message(sub).await else {
                return Some(Reply::Close(Closed::Peer));
            };
            let sent = conn.send(&[&entry.id, &entry.body]).await;
            turn.expired = None;
            turn.held = Some((entry, Instant::now() + msg_timeout));
            sent.err().map(Reply::Close)
        }
        Command::Fin(id) | Command::Req(id) => {
            let requeue = matches!(command, Command::Req(_));
            let id = protocol::parse_id(id);
            let Some(sub) = turn.sub.as_ref() else {
                return SmqError::Invalid.into();
            };
            match turn.held.take() {
                Some((entry, _)) if Some(entry.id) == id => {
                    if requeue {
                        hub.requeue(sub, entry, Requeue::Req);
                    } else {
                        hub.finish(sub);
                    }
                    None
                }
                Some(other) => {
                    turn.held = Some(other);
                    SmqError::NotInFlight.into()
                }
                None if id.is_some() && id == turn.expired => {
                    turn.expired = None;
                    None
                }
                None => SmqError::Invalid.into(),
            }
        }
    }
}

/// `AUTH <user> <password>`: `OK`, or the refusal that ends the connection.
async fn login(conn: &mut Conn, turn: &mut Turn, user: &str, password: &str) -> Option<Reply> {
    if turn.principal.is_some() || turn.sub.is_some() {
        return SmqError::Invalid.into();
    }
    let hub = conn.hub.clone();
    if hub.auth().checks_passwords() {
        match hub.auth().login(user, password.as_bytes()).await {
            Ok(Some(_role)) => turn.principal = Some(Principal::user(user)),
            Ok(None) => {
                tracing::debug!(%user, "smq: AUTH refused");
                Metrics::inc(&hub.metrics().smq_refused_total_bad_credentials);
                return Some(Reply::Refuse(SmqError::AuthFailed));
            }
            // Counted as `connections_refused_total{reason="auth_busy"}`.
            Err(_busy) => return Some(Reply::Refuse(SmqError::Busy)),
        }
    }
    conn.send(&[b"OK"]).await.err().map(Reply::Close)
}
