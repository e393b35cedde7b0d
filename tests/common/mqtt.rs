//! MQTT from the device's side: a raw 3.1.1 client that sends exactly the
//! bytes a test chooses, and a device that publishes fixes at QoS 1.

use std::net::SocketAddr;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{position, DEADLINE};

/// A raw MQTT 3.1.1 client: exactly the bytes a test chooses.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The last packet id [`RawClient::send`] chose.
    last_pkid: u16,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.expect("tcp connect"),
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

/// Publishes positions `seqs` for `vid` at QoS 1 as fast as the socket
/// takes them, then waits for every PUBACK: how a device drains its
/// offline ring. Returns how many were acknowledged.
pub async fn drive_pipelined(
    addr: SocketAddr,
    vid: &str,
    seqs: std::ops::RangeInclusive<u32>,
) -> u32 {
    let mut c = RawClient::mqtt(addr, &format!("dev-{vid}"), 30).await;
    let n = seqs.clone().count() as u32;
    for seq in seqs {
        let mut p = Publish::from_bytes(format!("v/{vid}/pos"), QoS::AtLeastOnce, position(seq));
        p.pkid = (seq % 60_000 + 1) as u16;
        c.send(Packet::Publish(p)).await;
    }
    let mut acked = 0;
    while acked < n {
        match c.recv().await {
            Some(Packet::PubAck(_)) => acked += 1,
            Some(_) => {}
            None => break,
        }
    }
    acked
}
