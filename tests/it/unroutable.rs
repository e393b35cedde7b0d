//! Records no queue is bound for, against a real RabbitMQ (`mandatory`
//! publishes come back): the uplink holds their routing keys and sends
//! one record per key per retry as a probe instead of re-sending the whole
//! backlog; binding a queue releases a key's records, all of them, in
//! order; the keep time still drops held records, unsent.
//!
//! Counted, not timed: the publishes the uplink sent
//! (`bridge_publishes_total`) against its retry passes
//! (`bridge_retry_passes_total`, one per `bridge.retry_failed_ms` = 200 ms
//! here) and the keys it holds.

use crate::common::*;
use fleetgate::Gateway;

/// Positions per vehicle, all spooled before any queue is bound.
const PER_VEHICLE: u32 = 600;

/// A gateway whose exchange (the test's own) has no queue bound, with
/// `PER_VEHICLE` positions of each of two vehicles acknowledged, so
/// spooled; everything it publishes comes back.
struct Unbound {
    gw: Gateway,
    channel: lapin::Channel,
    exchange: String,
    vehicles: [String; 2],
    /// Held open for the channel's sake.
    _conn: lapin::Connection,
    _dir: tempfile::TempDir,
}

async fn unbound(name: &str, keep_s: u64) -> Unbound {
    let t = tag(name);
    let dir = tempfile::tempdir().unwrap();
    let (conn, channel) = amqp().await;
    let (exchange, mut config) = config_with_own_exchange(&channel, &t, dir.path()).await;
    config.bridge.unroutable_keep_s = keep_s;
    let gw = gateway_with(config).await;
    await_metric(&gw, "fleetgate_bridge_connected", 1).await;
    let vehicles = [format!("{t}-a"), format!("{t}-b")];
    let sends = vehicles
        .iter()
        .map(|v| drive_pipelined(gw.mqtt_addr, v, 1..=PER_VEHICLE, 0, 0));
    for acked in futures_util::future::join_all(sends).await {
        assert_eq!(acked.positions.len(), PER_VEHICLE as usize);
    }
    Unbound {
        gw,
        channel,
        exchange,
        vehicles,
        _conn: conn,
        _dir: dir,
    }
}

/// Positions spooled by [`unbound`].
const POSITIONS: u64 = 2 * PER_VEHICLE as u64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_key_costs_one_probe_per_retry_and_a_queue_bound_later_gets_every_record_in_order(
) {
    let Unbound {
        gw,
        channel,
        exchange,
        vehicles,
        ..
    } = &unbound("probe", 600).await;
    // A whole pass over the spool found every position held but the two
    // probes (the vehicles' online events are held too).
    await_metric(
        gw,
        "fleetgate_bridge_unroutable_held_records",
        POSITIONS - 2,
    )
    .await;
    let publishes = metric(gw, "fleetgate_bridge_publishes_total").await;
    let probes = metric(gw, "fleetgate_bridge_unroutable_probes_total").await;
    let passes = metric(gw, "fleetgate_bridge_retry_passes_total").await;
    await_metric(gw, "fleetgate_bridge_retry_passes_total", passes + 5).await;
    let publishes = metric(gw, "fleetgate_bridge_publishes_total").await - publishes;
    let probes = metric(gw, "fleetgate_bridge_unroutable_probes_total").await - probes;
    let periods = metric(gw, "fleetgate_bridge_retry_passes_total").await - passes;
    let keys = metric(gw, "fleetgate_bridge_unroutable_held_keys").await;
    eprintln!("{publishes} publishes ({probes} probes) in {periods} retry periods for {keys} held keys, {POSITIONS} positions spooled");
    // The two position keys and the events' key (more if another event
    // kind fired).
    assert!((3..=6).contains(&keys), "held keys: {keys}");
    // One publish per key per retry period (the readings are not taken at
    // one instant: one period of slack), where re-sending the backlog
    // would be 1 200 a period.
    assert!(
        publishes <= (periods + 1) * keys,
        "{publishes} publishes in {periods} retry periods for {keys} held keys"
    );
    assert_eq!(publishes, probes, "every publish was a probe");
    // Probing goes on (the binding below depends on it). Not one per key
    // per period: on a loaded machine a probe may still be on its way at
    // the next pass, which then sends none for that key.
    assert!(
        probes >= keys,
        "each key is probed again: {probes} probes in {periods} periods for {keys} keys"
    );
    assert!(metric(gw, "fleetgate_bridge_spool_records").await >= POSITIONS);
    assert_eq!(
        metric(gw, "fleetgate_bridge_unroutable_dropped_total").await,
        0
    );

    // A consumer binds the positions' keys: the next probe of each is
    // routed and the rest follow, every one, in order, none lost.
    let bindings: Vec<String> = vehicles
        .iter()
        .map(|v| format!("fleet.{v}.position"))
        .collect();
    let mut consumer = consumer_on(channel, exchange, &bindings).await;
    expect_every_seq(&mut consumer, vehicles, u64::from(PER_VEHICLE)).await;
    // The released keys left the table; the events' key stays held.
    await_metric_at_most(gw, "fleetgate_bridge_unroutable_held_keys", keys - 2).await;
    assert!(metric(gw, "fleetgate_bridge_confirmed_total").await >= POSITIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_records_are_dropped_unsent_and_counted_at_their_keep_time() {
    let rig = unbound("heldkeep", 2).await;
    let gw = &rig.gw;
    // Every record goes at its keep time, and the spool is empty.
    await_metric(gw, "fleetgate_bridge_unroutable_dropped_total", POSITIONS).await;
    await_metric_at_most(gw, "fleetgate_bridge_spool_records", 0).await;
    let spooled = metric(gw, "fleetgate_bridge_records_spooled_total").await;
    let publishes = metric(gw, "fleetgate_bridge_publishes_total").await;
    let passes = metric(gw, "fleetgate_bridge_retry_passes_total").await;
    eprintln!("{publishes} publishes for {spooled} records over {passes} retry passes");
    assert!(
        passes >= 5,
        "2 s of keep time is ~10 retry passes: {passes}"
    );
    // A record is sent at most once, before its key's first return came
    // back, then held until dropped; beside that, a probe per pass for
    // each of at most 6 keys.
    // Re-sending the backlog at each pass would be ~10 × 1 200.
    assert!(
        publishes <= spooled + (passes + 1) * 6,
        "{publishes} publishes for {spooled} records over {passes} retry passes"
    );
    assert_eq!(
        metric(gw, "fleetgate_bridge_unroutable_held_records").await,
        0
    );
}
