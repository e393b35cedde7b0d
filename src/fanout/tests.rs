//! The fan-out's policies, one test per promise.

use super::*;
use crate::fleet::{EventKind, FleetEvent, PositionUpdate, Presence};
use crate::topics::VehicleId;
use fleetgate_wire::Position;

#[tokio::test]
async fn a_draining_consumer_gets_everything_then_the_end() {
    let fanout = Fanout::new(4, 16, 8, Arc::new(Metrics::default()));
    let mut sub = fanout
        .subscribe(SubscribeOptions {
            name: "bridge",
            policy: WhenFull::Block,
            capacity: 8,
            filter: Filter::All,
        })
        .unwrap();
    let mut publisher = fanout.publisher();
    publisher.publish(&[pos(1, 1), pos(2, 1)]).await;
    drop(publisher);
    let mut out = Vec::new();
    assert_eq!(sub.recv_until_closed(&mut out).await, Some(0));
    assert_eq!(out.len(), 2);
    out.clear();
    assert_eq!(sub.recv_until_closed(&mut out).await, None);
}

fn pos(slot: u32, seq: u32) -> Update {
    Update::Position(PositionUpdate {
        slot,
        vehicle: VehicleId::parse(&format!("v{slot}")).unwrap(),
        position: Position {
            seq,
            time_ms: u64::from(seq),
            lat_e6: slot as i32,
            lon_e6: 0,
            speed_cm_s: 0,
            heading: 0,
            flags: 1,
            odometer_m: None,
        },
        received_ms: 0,
        odometer_m: 0.0,
        late: false,
    })
}

fn event(slot: u32) -> Update {
    Update::Event(FleetEvent {
        id: 0,
        slot,
        vehicle: VehicleId::parse(&format!("v{slot}")).unwrap(),
        time_ms: 0,
        kind: EventKind::StatusChanged {
            from: Presence::Unknown,
            to: Presence::Online,
        },
    })
}

fn seqs(out: &[Update]) -> Vec<(u32, u32)> {
    out.iter()
        .filter_map(|u| match u {
            Update::Position(p) => Some((p.slot, p.position.seq)),
            _ => None,
        })
        .collect()
}

fn fanout(max_subscribers: usize) -> (Fanout, Arc<Metrics>) {
    let m = Arc::new(Metrics::default());
    (Fanout::new(max_subscribers, 16, 4, m.clone()), m)
}

fn opts(policy: WhenFull, capacity: usize) -> SubscribeOptions {
    SubscribeOptions {
        name: "test",
        policy,
        capacity,
        filter: Filter::All,
    }
}

#[tokio::test]
async fn conflate_keeps_the_newest_position_per_vehicle_and_every_event() {
    let (f, m) = fanout(4);
    let mut sub = f.subscribe(opts(WhenFull::Conflate, 8)).unwrap();
    let mut publisher = f.publisher();
    publisher
        .publish(&[pos(1, 1), pos(2, 1), event(1), pos(1, 2), pos(1, 3)])
        .await;
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out).await, 0, "conflation is not lag");
    assert_eq!(seqs(&out), vec![(1, 3), (2, 1)]);
    assert_eq!(
        out.iter().filter(|u| matches!(u, Update::Event(_))).count(),
        1
    );
    assert_eq!(Metrics::get(&m.fanout_conflated_total), 2);
}

#[tokio::test]
async fn conflate_past_capacity_drops_the_oldest_pending_vehicle() {
    let (f, _) = fanout(4);
    let mut sub = f.subscribe(opts(WhenFull::Conflate, 2)).unwrap();
    f.publisher()
        .publish(&[pos(1, 1), pos(2, 1), pos(3, 1)])
        .await;
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out).await, 1);
    assert_eq!(seqs(&out), vec![(2, 1), (3, 1)]);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_n_and_reports_lag() {
    let (f, m) = fanout(4);
    let mut sub = f.subscribe(opts(WhenFull::DropOldest, 3)).unwrap();
    f.publisher()
        .publish(&(1..=5).map(|s| pos(1, s)).collect::<Vec<_>>())
        .await;
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out).await, 2);
    assert_eq!(seqs(&out), vec![(1, 3), (1, 4), (1, 5)]);
    assert_eq!(Metrics::get(&m.fanout_dropped_total), 2);
}

#[tokio::test]
async fn drop_newest_keeps_the_first_n_and_reports_lag() {
    let (f, _) = fanout(4);
    let mut sub = f.subscribe(opts(WhenFull::DropNewest, 3)).unwrap();
    f.publisher()
        .publish(&(1..=5).map(|s| pos(1, s)).collect::<Vec<_>>())
        .await;
    let mut out = Vec::new();
    assert_eq!(sub.recv(&mut out).await, 2);
    assert_eq!(seqs(&out), vec![(1, 1), (1, 2), (1, 3)]);
}

#[tokio::test]
async fn block_makes_the_producer_wait_and_loses_nothing() {
    let (f, m) = fanout(4);
    let mut sub = f.subscribe(opts(WhenFull::Block, 2)).unwrap();
    let batch: Vec<Update> = (1..=7).map(|s| pos(1, s)).collect();
    let producer = {
        let f = f.clone();
        tokio::spawn(async move { f.publisher().publish(&batch).await })
    };
    let mut got = Vec::new();
    while got.len() < 7 {
        let mut out = Vec::new();
        assert_eq!(sub.recv(&mut out).await, 0);
        got.extend(seqs(&out));
    }
    producer.await.unwrap();
    assert_eq!(got, (1..=7).map(|s| (1, s)).collect::<Vec<_>>());
    assert!(Metrics::get(&m.fanout_blocked_total) >= 1);
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_slow_or_starve_another() {
    let (f, _) = fanout(4);
    let _stalled = f.subscribe(opts(WhenFull::DropOldest, 2)).unwrap();
    let mut live = f.subscribe(opts(WhenFull::DropOldest, 1000)).unwrap();
    let mut publisher = f.publisher();
    for s in 1..=100 {
        publisher.publish(&[pos(1, s)]).await;
    }
    let mut out = Vec::new();
    assert_eq!(live.recv(&mut out).await, 0);
    assert_eq!(out.len(), 100);
}

#[test]
fn one_subscriber_past_the_maximum_gets_a_clear_error_and_a_place_frees_on_drop() {
    let (f, m) = fanout(2);
    let a = f.subscribe(opts(WhenFull::Conflate, 4)).unwrap();
    let _b = f.subscribe(opts(WhenFull::Conflate, 4)).unwrap();
    let err = f.subscribe(opts(WhenFull::Conflate, 4)).err();
    assert_eq!(err, Some(FanoutError::TooManySubscribers { max: 2 }));
    assert_eq!(Metrics::get(&m.fanout_subscribers_refused_total), 1);
    drop(a);
    let _c = f.subscribe(opts(WhenFull::Conflate, 4)).unwrap();
    assert_eq!(Metrics::get(&m.fanout_subscribers), 2);
}

#[tokio::test]
async fn filters_narrow_by_vehicle_and_bounding_box() {
    let (f, _) = fanout(4);
    let mut by_id = f
        .subscribe(SubscribeOptions {
            filter: Filter::Vehicles(vec![VehicleId::parse("v2").unwrap()]),
            ..opts(WhenFull::DropOldest, 10)
        })
        .unwrap();
    let mut by_box = f
        .subscribe(SubscribeOptions {
            filter: Filter::BoundingBox {
                min_lat_e6: 3,
                min_lon_e6: -1,
                max_lat_e6: 9,
                max_lon_e6: 1,
            },
            ..opts(WhenFull::DropOldest, 10)
        })
        .unwrap();
    f.publisher()
        .publish(&[pos(1, 1), pos(2, 1), pos(3, 1), pos(4, 1)])
        .await;
    let mut out = Vec::new();
    by_id.recv(&mut out).await;
    assert_eq!(seqs(&out), vec![(2, 1)]);
    out.clear();
    by_box.recv(&mut out).await;
    assert_eq!(seqs(&out), vec![(3, 1), (4, 1)]);
}
