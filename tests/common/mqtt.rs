//! MQTT from the device's side: a raw 3.1.1 client that sends exactly the
//! bytes a test chooses, and a device that publishes fixes (and statuses)
//! at QoS 1.

use std::net::SocketAddr;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{position, status, DEADLINE};

/// A raw MQTT 3.1.1 client: exactly the bytes a test chooses.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The last packet id [`RawClient::send`] chose.
    last_pkid: u16,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(TcpStream::connect(addr).await.expect("tcp connect"))
    }

    /// A client on a connection the test made (e.g. from another address).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: BytesMut::new(),
            last_pkid: 0,
        }
    }

    /// TCP connect, CONNECT with `keep_alive`, expect a successful CONNACK.
    pub async fn mqtt(addr: SocketAddr, client_id: &str, keep_alive: u16) -> RawClient {
        let mut c = RawClient::connect(addr).await;
        let mut connect = Connect::new(client_id);
        connect.keep_alive = keep_alive;
        c.send(Packet::Connect(connect)).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.code, rumqttc::mqttbytes::v4::ConnectReturnCode::Success)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// Sends `packet` as a client library would: a SUBSCRIBE, UNSUBSCRIBE
    /// or QoS 1/2 PUBLISH left with packet id 0 (rumqttc's constructors'
    /// default, which MQTT 3.1.1 forbids) gets the next free one.
    pub async fn send(&mut self, mut packet: Packet) {
        let pkid = match &mut packet {
            Packet::Subscribe(s) => Some(&mut s.pkid),
            Packet::Unsubscribe(u) => Some(&mut u.pkid),
            Packet::Publish(p) if p.qos != rumqttc::mqttbytes::QoS::AtMostOnce => Some(&mut p.pkid),
            _ => None,
        };
        if let Some(pkid) = pkid.filter(|id| **id == 0) {
            self.last_pkid = self.last_pkid % 60_000 + 1;
            *pkid = self.last_pkid;
        }
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads until the server closes the connection; answers to what was
    /// sent before (acks, deliveries) are skipped, any other packet fails
    /// the test (`what` says which case).
    pub async fn expect_closed(&mut self, what: &str) {
        loop {
            match self.recv().await {
                None => return,
                Some(Packet::PubAck(_) | Packet::PubRec(_) | Packet::Publish(_)) => continue,
                Some(other) => panic!("{what}: answered {other:?} instead of closing"),
            }
        }
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(DEADLINE, async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent a malformed packet: {e:?}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no packet and no close before the deadline")
    }
}

/// Publishes positions `seqs` for `vid` at QoS 1 (acked = ingest has them).
pub async fn drive(addr: SocketAddr, vid: &str, seqs: std::ops::RangeInclusive<u32>) {
    let mut c = RawClient::mqtt(addr, &format!("dev-{vid}"), 30).await;
    for seq in seqs {
        let mut p = Publish::from_bytes(format!("v/{vid}/pos"), QoS::AtLeastOnce, position(seq));
        p.pkid = (seq % 60_000 + 1) as u16;
        c.send(Packet::Publish(p)).await;
        assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
    }
    c.send(Packet::Disconnect).await;
}

/// What a device was told is kept: the positions (by seq) and statuses
/// (by number) whose PUBACK came back.
#[derive(Debug, Default)]
pub struct Acked {
    pub positions: Vec<u32>,
    pub statuses: Vec<u32>,
}

/// Publishes positions `seqs` for `vid` at QoS 1, and after every
/// `status_every`-th one status number `seq / status_every` (0: none),
/// without waiting for acknowledgements in between, as a device drains its
/// offline ring: at most `per_s` publishes a second (0: as fast as the
/// socket takes them). Then waits for every PUBACK, telling them apart by
/// packet id. Returns what was acknowledged.
pub async fn drive_pipelined(
    addr: SocketAddr,
    vid: &str,
    seqs: std::ops::RangeInclusive<u32>,
    status_every: u32,
    per_s: u32,
) -> Acked {
    let mut c = RawClient::mqtt(addr, &format!("dev-{vid}"), 30).await;
    // Packet id → (is a status, number): one id per publish in flight.
    let mut sent = std::collections::HashMap::new();
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(1));
    let per_tick = per_s.div_ceil(1000);
    let mut in_tick = 0;
    let mut next_pkid = 0u16;
    for seq in seqs {
        let status_due = status_every > 0 && seq % status_every == 0;
        let publishes = [
            Some((format!("v/{vid}/pos"), position(seq), (false, seq))),
            status_due.then(|| {
                let k = seq / status_every;
                (format!("v/{vid}/status"), status(k), (true, k))
            }),
        ];
        for (topic, payload, what) in publishes.into_iter().flatten() {
            if per_s > 0 {
                if in_tick == per_tick {
                    pace.tick().await;
                    in_tick = 0;
                }
                in_tick += 1;
            }
            next_pkid = next_pkid % 60_000 + 1;
            let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
            p.pkid = next_pkid;
            assert!(
                sent.insert(next_pkid, what).is_none(),
                "more than 60 000 publishes in flight"
            );
            c.send(Packet::Publish(p)).await;
        }
    }
    let mut acked = Acked::default();
    while !sent.is_empty() {
        match c.recv().await {
            Some(Packet::PubAck(ack)) => match sent.remove(&ack.pkid) {
                Some((false, seq)) => acked.positions.push(seq),
                Some((true, k)) => acked.statuses.push(k),
                None => panic!("a PUBACK for packet id {} that was not in flight", ack.pkid),
            },
            Some(_) => {}
            None => break,
        }
    }
    acked.positions.sort_unstable();
    acked.statuses.sort_unstable();
    acked
}
