//! A SIGTERM while authenticated vehicles publish loses nothing
//! acknowledged (issue 14, as the broker issue requires of any stop): the
//! real binary with a password file and an ACL file, devices logged in with
//! their own credentials (role `device`), the uplink down so everything
//! waits in the spool, and the stop sent while the devices are still
//! publishing, as systemd sends it.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fleetgate::auth::passwd::{Entry, PasswordFile, PasswordHash};
use fleetgate::auth::Role;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::bridge::stop_rig;
use crate::common::*;

const VEHICLES: usize = 4;
/// Each device's rate: 4 000 publishes a second in all.
const PER_VEHICLE_PER_S: u64 = 1000;
/// The stop is sent once this many publishes were acknowledged in all.
const ACKED_BEFORE_SIGTERM: u64 = 2000;
/// No device gets this far (the stop comes after about a second); one that
/// did would end by itself and the test says so.
const MAX_PER_VEHICLE: u32 = 50_000;

/// The ACL beside the roles: a dashboard user may read the fleet; nothing
/// here widens what a device's role gives it (`v/<its name>/…` only).
const ACL: &str = "\
user ops
topic read fleet/#
";

fn password(vehicle: &str) -> String {
    format!("pw-{vehicle}")
}

/// A password file with each vehicle as a `device` user (its name is its
/// vehicle id) and `ops` as a dashboard, beside an ACL file, in `dir`;
/// the `[auth]` section naming them is appended to the config at
/// `config_path`.
fn secure(config_path: &Path, dir: &Path, vehicles: &[String]) {
    let mut file = PasswordFile::default();
    let users = vehicles
        .iter()
        .map(|v| (v.clone(), password(v), Role::Device))
        .chain([("ops".to_string(), "opspw".to_string(), Role::Dashboard)]);
    for (name, password, role) in users {
        // Few iterations: a debug build verifies these logins.
        let hash = PasswordHash::new(password.as_bytes(), 1000).unwrap();
        file.insert(name, Entry { hash, role });
    }
    let (passwd, acl) = (dir.join("passwd"), dir.join("acl"));
    std::fs::write(&passwd, file.render()).unwrap();
    std::fs::write(&acl, ACL).unwrap();
    let mut config = std::fs::read_to_string(config_path).unwrap();
    config.push_str(&format!(
        "[auth]\npassword_file = {passwd:?}\nacl_file = {acl:?}\n"
    ));
    std::fs::write(config_path, config).unwrap();
}

/// CONNECT as `vehicle` with `password`: the CONNACK's code and the client.
async fn login(
    addr: std::net::SocketAddr,
    vehicle: &str,
    password: &str,
) -> (ConnectReturnCode, RawClient) {
    let mut c = RawClient::connect(addr).await;
    let mut connect = Connect::new(vehicle);
    connect.keep_alive = 30;
    connect.set_login(vehicle, password);
    c.send(Packet::Connect(connect)).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => (ack.code, c),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// What one device was told is kept, and whether the gateway ended its
/// connection (the stop) rather than the device running out.
struct Published {
    acked: BTreeSet<u64>,
    sent: u32,
    closed_by_gateway: bool,
}

/// Logs in as `vehicle` and publishes QoS 1 positions `1, 2, …` at
/// [`PER_VEHICLE_PER_S`], pipelined (acknowledgements read as they come),
/// until the gateway closes the connection; each PUBACK is counted in
/// `acks`.
async fn publish_until_closed(
    addr: std::net::SocketAddr,
    vehicle: String,
    acks: Arc<watch::Sender<u64>>,
) -> Published {
    let (code, mut c) = login(addr, &vehicle, &password(&vehicle)).await;
    assert_eq!(code, ConnectReturnCode::Success, "{vehicle} logs in");
    let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / PER_VEHICLE_PER_S));
    let mut in_flight: HashMap<u16, u32> = HashMap::new();
    let mut out = Published {
        acked: BTreeSet::new(),
        sent: 0,
        closed_by_gateway: false,
    };
    let mut writable = true;
    loop {
        tokio::select! {
            _ = pace.tick(), if writable && out.sent < MAX_PER_VEHICLE => {
                let seq = out.sent + 1;
                let pkid = (seq % 60_000 + 1) as u16;
                let topic = format!("v/{vehicle}/pos");
                let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, position(seq));
                p.pkid = pkid;
                let mut bytes = BytesMut::new();
                Packet::Publish(p).write(&mut bytes, usize::MAX).unwrap();
                // A write refused after the stop began is not a publish.
                match c.stream.write_all(&bytes).await {
                    Ok(()) => {
                        in_flight.insert(pkid, seq);
                        out.sent = seq;
                    }
                    Err(_) => writable = false,
                }
            }
            packet = c.recv() => match packet {
                Some(Packet::PubAck(ack)) => {
                    let seq = in_flight
                        .remove(&ack.pkid)
                        .unwrap_or_else(|| panic!("{vehicle}: a PUBACK for {} not in flight", ack.pkid));
                    out.acked.insert(u64::from(seq));
                    acks.send_modify(|n| *n += 1);
                }
                Some(_) => {}
                None => {
                    out.closed_by_gateway = true;
                    return out;
                }
            },
        }
        if out.sent == MAX_PER_VEHICLE && in_flight.is_empty() {
            return out;
        }
    }
}

/// Four devices, each logged in with its own credentials, publish QoS 1
/// positions at 1 000 a second; with the uplink down every one waits in
/// the spool (`spool_fsync = "always"`, so the feeder is slow and much of
/// the stream is between the edge and the spool at any moment). Once 2 000
/// were acknowledged the gateway gets a SIGTERM while the devices keep
/// publishing; it must exit cleanly. A second process, with the uplink up,
/// must then deliver every position whose PUBACK a device received.
///
/// How it fails: a PUBACK is due only once the spool holds the publish
/// (`acks::Durable`), and a SIGTERM drains ingest and the feeder before
/// the spool closes. Were PUBACKs sent at receipt (before durability), a
/// publish acknowledged in the last moments would sit in ingest's or the
/// feeder's queue at the stop, and any shutdown that does not drain them
/// all (an exit on the signal, a drain with a timeout shorter than the
/// slow feeder's backlog, connections answered after the feeder closed)
/// would lose it: that position never reaches RabbitMQ and the wait below
/// fails naming it. Tried once by hand (not kept): with
/// `Durable::through` answering `u64::MAX` (every PUBACK at receipt) and
/// the drain cut to 1 ms, 248 acknowledged positions (62 per vehicle)
/// never arrived and the test failed. Positions sent but never
/// acknowledged may or may not arrive; they are not owed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_authenticated_vehicles_publish_loses_nothing_acknowledged() {
    let t = tag("sigterm-auth");
    let dir = tempfile::tempdir().unwrap();
    let rig = stop_rig(&t, dir.path()).await;
    let (proxy, config_path) = (&rig.proxy, &rig.config_path);
    let vehicles: Vec<String> = (1..=VEHICLES).map(|i| format!("{t}-v{i}")).collect();
    let bindings: Vec<String> = vehicles
        .iter()
        .map(|v| format!("fleet.{v}.position"))
        .collect();
    let mut consumer = consumer_on(&rig.channel, &rig.exchange, &bindings).await;
    secure(config_path, dir.path(), &vehicles);

    let first = GatewayProcess::start(config_path);
    // Auth is on in this process: a device with another's password is refused.
    let (code, _) = login(first.mqtt, &vehicles[0], &password(&vehicles[1])).await;
    assert_ne!(code, ConnectReturnCode::Success, "a wrong password logs in");

    let (acks_tx, mut acks_rx) = watch::channel(0u64);
    let acks_tx = Arc::new(acks_tx);
    let devices: Vec<_> = vehicles
        .iter()
        .map(|v| tokio::spawn(publish_until_closed(first.mqtt, v.clone(), acks_tx.clone())))
        .collect();
    tokio::time::timeout(DEADLINE, acks_rx.wait_for(|n| *n >= ACKED_BEFORE_SIGTERM))
        .await
        .expect("2 000 publishes acknowledged in time")
        .unwrap();
    // `sigterm` waits for the exit on this thread; the devices keep
    // publishing on the runtime meanwhile.
    tokio::task::spawn_blocking(move || first.sigterm())
        .await
        .unwrap();
    let mut owed: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for (vehicle, device) in vehicles.iter().zip(devices) {
        let published = device.await.unwrap();
        assert!(
            published.closed_by_gateway,
            "{vehicle} ran out before the stop"
        );
        println!(
            "{vehicle}: {} sent, {} acknowledged before the stop",
            published.sent,
            published.acked.len()
        );
        owed.insert(vehicle.clone(), published.acked);
    }
    let acknowledged: usize = owed.values().map(BTreeSet::len).sum();
    assert!(acknowledged as u64 >= ACKED_BEFORE_SIGTERM);

    proxy.restore();
    let _second = GatewayProcess::start(config_path);
    let (mut delivered, mut not_owed) = (0u64, 0u64);
    while owed.values().any(|s| !s.is_empty()) {
        let Ok(m) = tokio::time::timeout(DEADLINE / 2, next(&mut consumer)).await else {
            let lost: Vec<_> = owed
                .iter()
                .map(|(v, s)| (v, s.len(), s.iter().take(5).collect::<Vec<_>>()))
                .collect();
            panic!("acknowledged positions never arrived (vehicle, count, first ones): {lost:?}");
        };
        delivered += 1;
        let vehicle = m.body["vehicle_id"].as_str().unwrap().to_string();
        let seq = m.body["seq"].as_u64().unwrap();
        if !owed.get_mut(&vehicle).is_some_and(|s| s.remove(&seq)) {
            not_owed += 1;
        }
    }
    println!(
        "{t}: {acknowledged} acknowledged, all delivered in {delivered} messages ({not_owed} unacknowledged or repeated)"
    );
}
