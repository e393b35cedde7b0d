//! Tests of fleetgate's patches that need a real listener (see PATCHES.md).
use super::*;
use crate::protocol::{
    Connect, Disconnect, DisconnectReasonCode, Filter, QoS, RetainForwardRule, Subscribe,
};
use crate::{RouterConfig, ServerSettings};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start_broker() -> SocketAddr {
    let router_config = RouterConfig {
        max_connections: 1000,
        max_outgoing_packet_count: 200,
        max_segment_size: 10 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
        max_persistent_sessions: None,
        lagged_messages: Default::default(),
    };
    let router_tx = Router::new(0, router_config).spawn();
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = ServerSettings {
        name: "patch-tests".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        },
    };
    let mut server = Server::new(settings, router_tx, V4);
    tokio::spawn(async move { server.start(LinkType::Remote).await });
    for _ in 0..100 {
        if TcpStream::connect(listen).await.is_ok() {
            return listen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("broker did not listen on {listen}");
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        V4.write(packet, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or None when the broker closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            match V4.read_mut(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(crate::protocol::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the broker: {e:?}"),
            }
            let read =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("broker silent for 10 s");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// Connects, subscribes, sends DISCONNECT and closes at once: what many
/// short-lived clients (and fleetgate's edge) do.
async fn short_lived_client(addr: SocketAddr, client_id: String) {
    let mut c = Client {
        stream: TcpStream::connect(addr).await.unwrap(),
        buf: BytesMut::new(),
    };
    let connect = Connect {
        keep_alive: 30,
        client_id: client_id.clone(),
        clean_session: true,
    };
    c.send(Packet::Connect(connect, None, None, None, None))
        .await;
    assert!(
        matches!(c.recv().await, Some(Packet::ConnAck(..))),
        "{client_id}: no CONNACK"
    );
    let subscribe = Subscribe {
        pkid: 1,
        filters: vec![Filter {
            path: format!("own/{client_id}"),
            qos: QoS::AtLeastOnce,
            nolocal: false,
            preserve_retain: false,
            retain_forward_rule: RetainForwardRule::OnEverySubscribe,
        }],
    };
    c.send(Packet::Subscribe(subscribe, None)).await;
    loop {
        match c.recv().await {
            Some(Packet::SubAck(..)) => break,
            Some(_) => continue,
            None => panic!("{client_id}: connection ended before its SUBACK"),
        }
    }
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    c.send(Packet::Disconnect(disconnect, None)).await;
    drop(c);
}

// ---------------------------------------------------------------- patch 5

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_never_ends_the_next_connection() {
    let addr = start_broker().await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        tasks.spawn(async move {
            for i in 0..40 {
                short_lived_client(addr, format!("c-{worker}-{i}")).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

// ---------------------------------------------------------------- patch 6

/// Polls `future` once, with a waker that does nothing.
fn ready_at_once<F: std::future::Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.as_mut().poll(&mut cx).is_ready()
}

#[tokio::test]
async fn a_zero_connection_delay_never_waits_for_the_timer() {
    // `time::sleep(Duration::ZERO)` is pending until the timer's next
    // 1 ms tick; the accept loop must not be, or it accepts ~1 000/s.
    for _ in 0..100 {
        assert!(ready_at_once(pause_between_accepts(Duration::ZERO)));
    }
    // A configured delay is still honoured.
    assert!(!ready_at_once(pause_between_accepts(
        Duration::from_millis(50)
    )));
}

#[tokio::test]
async fn the_timer_does_round_a_zero_sleep_up_to_its_next_tick() {
    // Why patch 6 exists: if tokio ever fires `sleep(0)` at once, this
    // fails and the patch can go. Allowed to be ready now and then (a
    // poll that lands exactly on a tick), not every time.
    let pending = (0..100)
        .filter(|_| !ready_at_once(time::sleep(Duration::ZERO)))
        .count();
    assert!(pending > 50, "sleep(0) was pending {pending} times in 100");
}
