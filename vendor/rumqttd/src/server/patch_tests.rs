//! Tests of fleetgate's patches that need a real listener (see PATCHES.md).
use super::*;
use crate::protocol::{
    Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter, LastWill, Login, Publish,
    QoS, RetainForwardRule, Subscribe,
};
use crate::{RouterConfig, ServerSettings};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start_broker() -> SocketAddr {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = Server::new(settings(listen, None), router(), V4);
    tokio::spawn(async move { server.start(LinkType::Remote).await });
    for _ in 0..100 {
        if TcpStream::connect(listen).await.is_ok() {
            return listen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("broker did not listen on {listen}");
}

fn router() -> Sender<(ConnectionId, Event)> {
    Router::new(0, router_config()).spawn()
}

fn router_config() -> RouterConfig {
    RouterConfig {
        max_connections: 1000,
        max_outgoing_packet_count: 200,
        max_segment_size: 10 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
        max_persistent_sessions: None,
        lagged_messages: Default::default(),
        link_capacity: None,
    }
}

fn settings(listen: SocketAddr, auth: Option<(&str, &str)>) -> ServerSettings {
    ServerSettings {
        name: "patch-tests".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 100,
            auth: auth.map(|(u, p)| HashMap::from([(u.to_owned(), p.to_owned())])),
            external_auth: None,
            dynamic_filters: false,
        },
    }
}

struct Client {
    stream: Box<dyn N>,
    buf: BytesMut,
}

impl Client {
    async fn tcp(addr: SocketAddr) -> Client {
        Client {
            stream: Box::new(TcpStream::connect(addr).await.unwrap()),
            buf: BytesMut::new(),
        }
    }

    /// A client served through `InProcess::serve`, over an in-memory pipe.
    fn in_process(broker: &InProcess<V4>) -> Client {
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(broker.serve(theirs));
        Client {
            stream: Box::new(ours),
            buf: BytesMut::new(),
        }
    }

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
async fn short_lived_client(mut c: Client, client_id: String) {
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
                short_lived_client(Client::tcp(addr).await, format!("c-{worker}-{i}")).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

// ---------------------------------------------------------------- patch 7

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
    // Why patch 7 exists: if tokio ever fires `sleep(0)` at once, this
    // fails and the patch can go. Allowed to be ready now and then (a
    // poll that lands exactly on a tick), not every time.
    let pending = (0..100)
        .filter(|_| !ready_at_once(time::sleep(Duration::ZERO)))
        .count();
    assert!(pending > 50, "sleep(0) was pending {pending} times in 100");
}

// ---------------------------------------------------------------- patch 8

fn in_process_broker(auth: Option<(&str, &str)>) -> InProcess<V4> {
    // Never started: in-process connections need no listener.
    let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();
    Server::new(settings(unused, auth), router(), V4).in_process()
}

fn connect(client_id: &str, will: Option<LastWill>, login: Option<(&str, &str)>) -> Packet {
    let connect = Connect {
        keep_alive: 30,
        client_id: client_id.to_owned(),
        clean_session: true,
    };
    let login = login.map(|(u, p)| Login {
        username: u.to_owned(),
        password: p.to_owned(),
    });
    Packet::Connect(connect, None, will, None, login)
}

fn subscribe(pkid: u16, path: &str) -> Packet {
    Packet::Subscribe(
        Subscribe {
            pkid,
            filters: vec![Filter {
                path: path.to_owned(),
                qos: QoS::AtLeastOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }],
        },
        None,
    )
}

/// Connects, and returns the CONNACK's code (None: closed without one).
async fn connack(c: &mut Client, packet: Packet) -> Option<ConnectReturnCode> {
    c.send(packet).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack, _)) => Some(ack.code),
        None => None,
        Some(other) => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_clients_subscribe_publish_and_get_their_acks() {
    pub_sub_and_acks(in_process_broker(None)).await;
}

// ---------------------------------------------------------------- patch 9

/// The router as a task of a one-thread runtime: anything that blocked a
/// thread on the router (a connect's `build`, a disconnect's `send`) would
/// hang it, since the router needs that thread to answer. The runtime runs
/// on a thread of its own, so a hang fails the wait below instead of the
/// test runner.
#[test]
fn the_router_as_a_task_serves_clients_on_the_same_thread() {
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();
            let router_tx = Router::new(0, router_config()).spawn_task();
            let broker = Server::new(settings(unused, None), router_tx.clone(), V4).in_process();
            for round in 0..3 {
                pub_sub_and_acks(broker.clone()).await;
                // A local link, as the embedding opens them, awaited too.
                let name = format!("local-{round}");
                crate::local::LinkBuilder::new(&name, router_tx.clone())
                    .build_async()
                    .await
                    .unwrap();
            }
        });
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the exchange hung: something blocked the thread the router runs on");
}

/// A subscriber and a publisher: CONNACKs, SUBACK, PUBACK, the delivery.
async fn pub_sub_and_acks(broker: InProcess<V4>) {
    let mut sub = Client::in_process(&broker);
    let mut publisher = Client::in_process(&broker);
    let ok = Some(ConnectReturnCode::Success);
    assert_eq!(connack(&mut sub, connect("sub", None, None)).await, ok);
    assert_eq!(
        connack(&mut publisher, connect("pub", None, None)).await,
        ok
    );
    sub.send(subscribe(1, "t/#")).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(..))));
    let mut publish = Publish::new("t/x", "hello", false);
    publish.qos = QoS::AtLeastOnce;
    publish.pkid = 7;
    publisher.send(Packet::Publish(publish, None)).await;
    match publisher.recv().await {
        Some(Packet::PubAck(ack, _)) => assert_eq!(ack.pkid, 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    match sub.recv().await {
        Some(Packet::Publish(p, _)) => assert_eq!(&p.payload[..], b"hello"),
        other => panic!("expected the PUBLISH, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_connects_are_authenticated_and_a_lost_client_fires_its_will() {
    let login = ("edge", "secret");
    let broker = in_process_broker(Some(login));
    for wrong in [None, Some(("edge", "guess"))] {
        let mut c = Client::in_process(&broker);
        let code = connack(&mut c, connect("intruder", None, wrong)).await;
        assert_ne!(code, Some(ConnectReturnCode::Success), "{wrong:?} let in");
    }
    let mut sub = Client::in_process(&broker);
    let ok = Some(ConnectReturnCode::Success);
    assert_eq!(
        connack(&mut sub, connect("sub", None, Some(login))).await,
        ok
    );
    sub.send(subscribe(1, "wills/#")).await;
    assert!(matches!(sub.recv().await, Some(Packet::SubAck(..))));
    let will = LastWill {
        topic: "wills/lost".into(),
        message: "gone".into(),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let mut lost = Client::in_process(&broker);
    assert_eq!(
        connack(&mut lost, connect("lost", Some(will), Some(login))).await,
        ok
    );
    // The pipe closes without a DISCONNECT, as a dropped socket would.
    drop(lost);
    match sub.recv().await {
        Some(Packet::Publish(p, _)) => assert_eq!(&p.payload[..], b"gone"),
        other => panic!("expected the will, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_short_lived_clients_never_end_each_other() {
    // Patch 5's race, through `InProcess` instead of the listener.
    let broker = in_process_broker(None);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let broker = broker.clone();
        tasks.spawn(async move {
            for i in 0..40 {
                short_lived_client(Client::in_process(&broker), format!("c-{worker}-{i}")).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

// ---------------------------------------------------------------- patch 10

/// A link the router refuses (here: it is full) must leave no will handler
/// behind. Before the patch the next connect with that client id found the
/// refused link's handler, `try_send(..).unwrap()` panicked on its dropped
/// receiver while holding the handlers' lock, and the poisoned lock then
/// failed every later connect: every client locked out until restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_can_come_back_and_locks_no_one_out() {
    let unused: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let full_at_one = RouterConfig {
        max_connections: 1,
        ..router_config()
    };
    let router_tx = Router::new(0, full_at_one).spawn();
    let broker = Server::new(settings(unused, None), router_tx, V4).in_process();
    let ok = Some(ConnectReturnCode::Success);

    let mut holder = Client::in_process(&broker);
    assert_eq!(connack(&mut holder, connect("holder", None, None)).await, ok);
    // The router is full: the same id twice, refused each time (closed
    // without a CONNACK); neither refusal may break what follows.
    for _ in 0..2 {
        let mut refused = Client::in_process(&broker);
        assert_eq!(connack(&mut refused, connect("again", None, None)).await, None);
    }
    send_disconnect(&mut holder).await;
    // Room again: the refused id and a fresh one are both served. The
    // router frees the holder's slot once it has read the DISCONNECT, so a
    // connect before that is refused like the ones above; retried until
    // served, within a deadline.
    for id in ["again", "fresh"] {
        let mut served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut c = Client::in_process(&broker);
                if connack(&mut c, connect(id, None, None)).await == ok {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} never served after the refusals"));
        send_disconnect(&mut served).await;
    }
}

/// Sends DISCONNECT and waits for the broker to close the connection.
async fn send_disconnect(c: &mut Client) {
    let disconnect = Disconnect {
        reason_code: DisconnectReasonCode::NormalDisconnection,
    };
    c.send(Packet::Disconnect(disconnect, None)).await;
    assert!(c.recv().await.is_none(), "still open after DISCONNECT");
}
