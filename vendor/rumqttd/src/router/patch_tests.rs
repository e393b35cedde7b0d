//! Tests of fleetgate's patches to the router (see PATCHES.md). They drive a
//! `Router` by hand, in this thread: a connection is registered as the
//! network link would register it, packets are pushed into its incoming
//! buffer, and what the router sends back is read from its outgoing buffer.
use super::*;
use crate::protocol::{Filter as SubFilter, RetainForwardRule, Subscribe, Unsubscribe};
use crate::router::iobufs::{Incoming, Outgoing};
use crate::router::shared_subs::Strategy;
use crate::router::{Ack, LinkIdentity};
use parking_lot::Mutex;
use std::sync::Arc;

pub(super) fn config() -> RouterConfig {
    RouterConfig {
        max_connections: 100_000,
        max_outgoing_packet_count: 200,
        max_segment_size: 10 * 1024,
        max_segment_count: 2,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Strategy::RoundRobin,
        max_persistent_sessions: None,
        lagged_messages: Default::default(),
        link_capacity: None,
    }
}

pub(super) struct Client {
    pub id: ConnectionId,
    ibuf: Arc<Mutex<VecDeque<Packet>>>,
    obuf: Arc<Mutex<VecDeque<Notification>>>,
    _wake: Receiver<()>,
}

pub(super) fn connect(router: &mut Router, client_id: &str, clean: bool) -> (Client, ConnAck) {
    let connection = Connection::new(None, client_id.to_owned(), clean, false);
    let incoming = Incoming::new(client_id.to_owned());
    let (outgoing, wake) = Outgoing::new(client_id.to_owned());
    let (ibuf, obuf) = (incoming.buffer(), outgoing.buffer());
    router.handle_new_connection(connection, incoming, outgoing);
    let id = router.connection_map[client_id];
    let client = Client {
        id,
        ibuf,
        obuf,
        _wake: wake,
    };
    run(router);
    let connack = recv(router, &client)
        .into_iter()
        .find_map(|n| match n {
            Notification::DeviceAck(Ack::ConnAck(_, ack, _)) => Some(ack),
            _ => None,
        })
        .expect("a ConnAck");
    (client, connack)
}

/// What the router's loop does after events: let ready connections consume.
pub(super) fn run(router: &mut Router) {
    for _ in 0..100 {
        router.consume();
    }
}

pub(super) fn send(router: &mut Router, client: &Client, packets: Vec<Packet>) {
    client.ibuf.lock().extend(packets);
    router.handle_device_payload(client.id);
    run(router);
}

pub(super) fn disconnect(router: &mut Router, client: Client) {
    router.handle_disconnection(client.id, None);
    run(router);
}

/// Everything the router sent to `client`; re-schedules it if it was
/// unscheduled (what a link does once it has written its buffer out).
pub(super) fn recv(router: &mut Router, client: &Client) -> Vec<Notification> {
    let out: Vec<Notification> = client.obuf.lock().drain(..).collect();
    if out.iter().any(|n| matches!(n, Notification::Unschedule)) {
        router
            .scheduler
            .reschedule(client.id, ScheduleReason::Ready);
        run(router);
    }
    out
}

pub(super) fn publishes(notifications: &[Notification]) -> Vec<Publish> {
    notifications
        .iter()
        .filter_map(|n| match n {
            Notification::Forward(f) => Some(f.publish.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn subscribe(path: &str, qos: QoS) -> Packet {
    Packet::Subscribe(
        Subscribe {
            pkid: 1,
            filters: vec![SubFilter {
                path: path.to_owned(),
                qos,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::OnEverySubscribe,
            }],
        },
        None,
    )
}

pub(super) fn unsubscribe(path: &str) -> Packet {
    Packet::Unsubscribe(
        Unsubscribe {
            pkid: 2,
            filters: vec![path.to_owned()],
        },
        None,
    )
}

pub(super) fn publish(topic: &str, qos: QoS, pkid: u16) -> Packet {
    let mut publish = Publish::new(topic.to_owned(), "payload".to_owned(), false);
    publish.qos = qos;
    publish.pkid = pkid;
    Packet::Publish(publish, None)
}

pub(super) fn puback(pkid: u16) -> Packet {
    Packet::PubAck(
        PubAck {
            pkid,
            reason: PubAckReason::Success,
        },
        None,
    )
}

/// Patch 1's invariant: every live log's holder count is exactly the number
/// of requests (tracked, parked, woken, saved in the graveyard) and inflight
/// publishes that carry its index, and no holder carries a freed index.
pub(super) fn assert_holders_consistent(router: &Router) {
    let mut counted: HashMap<FilterIdx, usize> = HashMap::new();
    let mut count = |idx: FilterIdx| *counted.entry(idx).or_default() += 1;
    for (_, tracker) in router.scheduler.trackers.iter() {
        tracker
            .data_requests
            .iter()
            .for_each(|r| count(r.filter_idx));
    }
    router
        .datalog
        .parked()
        .iter()
        .for_each(|r| count(r.filter_idx));
    router
        .notifications
        .iter()
        .for_each(|(_, r)| count(r.filter_idx));
    for (_, saved) in router.graveyard.saved() {
        if let Some(state) = &saved.session_state {
            state
                .tracker
                .data_requests
                .iter()
                .for_each(|r| count(r.filter_idx));
        }
    }
    for (_, outgoing) in router.obufs.iter() {
        outgoing.inflight_filters().for_each(&mut count);
    }

    let stored = router.datalog.refs();
    for (idx, n) in &counted {
        match stored.get(idx) {
            Some((refs, _)) => assert_eq!(refs, n, "holders of filter log {idx}"),
            None => panic!("{n} holders of freed filter log {idx}"),
        }
    }
    for (idx, (refs, pinned)) in &stored {
        if !counted.contains_key(idx) {
            assert_eq!(
                *refs, 0,
                "filter log {idx} counts holders that do not exist"
            );
            assert!(
                *pinned,
                "filter log {idx} is held by nothing but was not freed"
            );
        }
    }
}

// ---------------------------------------------------------------- patch 1

#[test]
fn filter_log_is_freed_when_its_last_subscriber_unsubscribes() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", true);
    let (b, _) = connect(&mut router, "b", true);
    send(&mut router, &a, vec![subscribe("s/1", QoS::AtMostOnce)]);
    send(&mut router, &b, vec![subscribe("s/1", QoS::AtMostOnce)]);
    send(&mut router, &b, vec![publish("s/1", QoS::AtMostOnce, 0)]);
    assert_eq!(router.datalog.filter_count(), 1);
    assert_eq!(router.datalog.cached_topics(), 1);

    send(&mut router, &a, vec![unsubscribe("s/1")]);
    assert_eq!(router.datalog.filter_count(), 1, "b still subscribes");
    assert_holders_consistent(&router);

    send(&mut router, &b, vec![unsubscribe("s/1")]);
    assert_eq!(router.datalog.filter_count(), 0);
    assert_eq!(router.datalog.cached_topics(), 0);
    assert!(router.subscription_map.is_empty());
    assert_holders_consistent(&router);
}

#[test]
fn filter_logs_of_clean_sessions_are_freed_when_they_disconnect() {
    let mut router = Router::new(0, config());
    let (publisher, _) = connect(&mut router, "publisher", true);
    for i in 0..1000 {
        let (c, _) = connect(&mut router, &format!("c{i}"), true);
        send(
            &mut router,
            &c,
            vec![subscribe(&format!("t/{i}"), QoS::AtLeastOnce)],
        );
        send(
            &mut router,
            &publisher,
            vec![publish(&format!("t/{i}"), QoS::AtMostOnce, 0)],
        );
        disconnect(&mut router, c);
    }
    assert_eq!(router.datalog.filter_count(), 0);
    assert_eq!(router.datalog.cached_topics(), 0);
    assert!(router.subscription_map.is_empty());
    assert_holders_consistent(&router);
}

#[test]
fn inflight_publish_holds_its_filter_log_until_acked() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", false);
    send(&mut router, &a, vec![subscribe("q/1", QoS::AtLeastOnce)]);
    recv(&mut router, &a);
    send(&mut router, &a, vec![publish("q/1", QoS::AtLeastOnce, 7)]);
    let forwarded = publishes(&recv(&mut router, &a));
    assert_eq!(forwarded.len(), 1);

    send(&mut router, &a, vec![unsubscribe("q/1")]);
    assert_eq!(
        router.datalog.filter_count(),
        1,
        "held by the unacked publish"
    );
    assert_holders_consistent(&router);

    send(&mut router, &a, vec![puback(forwarded[0].pkid)]);
    assert_eq!(router.datalog.filter_count(), 0);
    assert_holders_consistent(&router);
}

#[test]
fn a_reused_log_slot_gets_only_its_new_filters_data() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", true);
    send(
        &mut router,
        &a,
        vec![subscribe("old/topic", QoS::AtMostOnce)],
    );
    send(
        &mut router,
        &a,
        vec![publish("old/topic", QoS::AtMostOnce, 0)],
    );
    let old_idx = router.datalog.filter_idx("old/topic").unwrap();
    assert_eq!(
        router.datalog.cached_filters_of("old/topic"),
        Some(vec![old_idx])
    );
    send(&mut router, &a, vec![unsubscribe("old/topic")]);
    recv(&mut router, &a);

    let (b, _) = connect(&mut router, "b", true);
    send(
        &mut router,
        &b,
        vec![subscribe("new/topic", QoS::AtMostOnce)],
    );
    assert_eq!(
        router.datalog.filter_idx("new/topic"),
        Some(old_idx),
        "slot reused"
    );
    assert_eq!(router.datalog.cached_filters_of("old/topic"), None);

    send(
        &mut router,
        &a,
        vec![publish("old/topic", QoS::AtMostOnce, 0)],
    );
    send(
        &mut router,
        &a,
        vec![publish("new/topic", QoS::AtMostOnce, 0)],
    );
    let got = publishes(&recv(&mut router, &b));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].topic, "new/topic");
    assert_holders_consistent(&router);
}

#[test]
fn persistent_session_holds_its_filters_until_a_clean_session_replaces_it() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", false);
    send(&mut router, &a, vec![subscribe("p/1", QoS::AtLeastOnce)]);
    disconnect(&mut router, a);
    assert_eq!(router.datalog.filter_count(), 1);
    assert_holders_consistent(&router);

    let (a, ack) = connect(&mut router, "a", true);
    assert!(!ack.session_present);
    assert_eq!(router.datalog.filter_count(), 0);
    assert_holders_consistent(&router);
    disconnect(&mut router, a);
}

#[test]
fn resumed_session_can_unsubscribe_and_frees_the_log() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", false);
    send(&mut router, &a, vec![subscribe("p/1", QoS::AtLeastOnce)]);
    disconnect(&mut router, a);

    let (a, ack) = connect(&mut router, "a", false);
    assert!(ack.session_present);
    send(&mut router, &a, vec![unsubscribe("p/1")]);
    let unsuback = recv(&mut router, &a)
        .into_iter()
        .any(|n| matches!(n, Notification::DeviceAck(Ack::UnsubAck(_))));
    assert!(
        unsuback,
        "a resumed subscription is acknowledged when unsubscribed"
    );
    assert_eq!(router.datalog.filter_count(), 0);
    assert_holders_consistent(&router);
}

#[test]
fn unsubscribe_in_the_batch_of_a_publish_that_woke_it_leaves_nothing() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", true);
    send(&mut router, &a, vec![subscribe("w/1", QoS::AtMostOnce)]);
    recv(&mut router, &a);
    // parked now; one batch wakes it and unsubscribes it
    send(
        &mut router,
        &a,
        vec![publish("w/1", QoS::AtMostOnce, 0), unsubscribe("w/1")],
    );
    assert_eq!(router.datalog.filter_count(), 0);
    assert_holders_consistent(&router);
    send(&mut router, &a, vec![publish("w/1", QoS::AtMostOnce, 0)]);
    assert_holders_consistent(&router);
}

#[test]
fn shared_subscription_log_is_freed_on_unsubscribe() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", true);
    send(
        &mut router,
        &a,
        vec![subscribe("$share/g/s/1", QoS::AtMostOnce)],
    );
    recv(&mut router, &a);
    assert_eq!(router.datalog.filter_count(), 1);
    send(&mut router, &a, vec![unsubscribe("$share/g/s/1")]);
    assert_eq!(router.datalog.filter_count(), 0);
    assert!(router.shared_subscriptions.is_empty());
    assert_holders_consistent(&router);
}

#[test]
fn initialized_filters_are_never_freed() {
    let mut config = config();
    config.initialized_filters = Some(vec!["init/#".to_owned()]);
    let mut router = Router::new(0, config);
    let (a, _) = connect(&mut router, "a", true);
    send(&mut router, &a, vec![subscribe("init/#", QoS::AtMostOnce)]);
    disconnect(&mut router, a);
    assert_eq!(router.datalog.filter_count(), 1);
    assert_holders_consistent(&router);
}

#[test]
fn topic_to_filter_cache_is_bounded() {
    let mut router = Router::new(0, config());
    let (a, _) = connect(&mut router, "a", true);
    send(&mut router, &a, vec![subscribe("c/#", QoS::AtMostOnce)]);
    for i in 0..crate::router::logs::MAX_CACHED_TOPICS + 10 {
        send(
            &mut router,
            &a,
            vec![publish(&format!("c/{i}"), QoS::AtMostOnce, 0)],
        );
        recv(&mut router, &a);
    }
    assert!(router.datalog.cached_topics() <= crate::router::logs::MAX_CACHED_TOPICS);
    // still routed after the cache was dropped
    send(&mut router, &a, vec![publish("c/x", QoS::AtMostOnce, 0)]);
    assert_eq!(publishes(&recv(&mut router, &a)).len(), 1);
}

// ---------------------------------------------------------------- patch 2

#[test]
fn clean_sessions_leave_nothing_in_the_graveyard() {
    let mut router = Router::new(0, config());
    for i in 0..1000 {
        let (c, _) = connect(&mut router, &format!("fresh-{i}"), true);
        send(
            &mut router,
            &c,
            vec![subscribe(&format!("t/{i}"), QoS::AtMostOnce)],
        );
        disconnect(&mut router, c);
    }
    assert_eq!(router.graveyard.len(), 0);
    assert!(router.connection_map.is_empty());
    assert_eq!(router.datalog.filter_count(), 0);
}

#[test]
fn persistent_sessions_are_bounded_oldest_disconnect_evicted_first() {
    let mut config = config();
    config.max_persistent_sessions = Some(5);
    let mut router = Router::new(0, config);
    for i in 0..20 {
        let (c, _) = connect(&mut router, &format!("p{i}"), false);
        send(
            &mut router,
            &c,
            vec![subscribe(&format!("own/{i}"), QoS::AtLeastOnce)],
        );
        disconnect(&mut router, c);
        assert!(router.graveyard.len() <= 5);
    }
    assert_eq!(router.graveyard.len(), 5);
    // the evicted sessions' filters are freed with them
    assert_eq!(router.datalog.filter_count(), 5);
    assert_holders_consistent(&router);

    let (old, ack) = connect(&mut router, "p0", false);
    assert!(!ack.session_present, "p0 was evicted");
    let (recent, ack) = connect(&mut router, "p19", false);
    assert!(ack.session_present, "p19 was kept");
    // the resumed session still gets its subscription's data
    send(
        &mut router,
        &old,
        vec![publish("own/19", QoS::AtMostOnce, 0)],
    );
    assert_eq!(publishes(&recv(&mut router, &recent)).len(), 1);
    assert_holders_consistent(&router);
}

#[test]
fn persistent_sessions_stay_unbounded_by_default() {
    let mut router = Router::new(0, config());
    for i in 0..50 {
        let (c, _) = connect(&mut router, &format!("p{i}"), false);
        disconnect(&mut router, c);
    }
    assert_eq!(router.graveyard.len(), 50);
}

// ---------------------------------------------------------------- patch 3

#[test]
fn qos2_subscriber_gets_each_publish_at_the_lower_of_the_two_qos() {
    let mut router = Router::new(0, config());
    let (sub, _) = connect(&mut router, "sub", true);
    let (publisher, _) = connect(&mut router, "pub", true);
    send(&mut router, &sub, vec![subscribe("m/1", QoS::ExactlyOnce)]);
    recv(&mut router, &sub);

    send(
        &mut router,
        &publisher,
        vec![publish("m/1", QoS::AtMostOnce, 0)],
    );
    let got = publishes(&recv(&mut router, &sub));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert_eq!(got[0].pkid, 0);
    assert_eq!(router.obufs[sub.id].inflight_count(), 0, "no inflight slot");

    send(
        &mut router,
        &publisher,
        vec![publish("m/1", QoS::AtLeastOnce, 9)],
    );
    let got = publishes(&recv(&mut router, &sub));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    assert_ne!(got[0].pkid, 0);
    assert_eq!(router.obufs[sub.id].inflight_count(), 1);
}

#[test]
fn qos0_subscriber_gets_qos1_publishes_at_qos0() {
    let mut router = Router::new(0, config());
    let (sub, _) = connect(&mut router, "sub", true);
    send(&mut router, &sub, vec![subscribe("m/1", QoS::AtMostOnce)]);
    recv(&mut router, &sub);
    send(&mut router, &sub, vec![publish("m/1", QoS::AtLeastOnce, 5)]);
    let got = publishes(&recv(&mut router, &sub));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
}

#[test]
fn mixed_qos_publishes_flow_without_stalling_and_acks_stay_in_order() {
    let mut router = Router::new(0, config());
    let (sub, _) = connect(&mut router, "sub", true);
    let (publisher, _) = connect(&mut router, "pub", true);
    send(&mut router, &sub, vec![subscribe("m/#", QoS::AtLeastOnce)]);
    recv(&mut router, &sub);

    let total = 2000;
    let mut received = Vec::new();
    let mut next = 0;
    while received.len() < total {
        if next < total {
            let batch = (next..(next + 150).min(total))
                .map(|i| {
                    let qos = if i % 3 == 0 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    };
                    publish(&format!("m/{i}"), qos, (i % 60000 + 1) as u16)
                })
                .collect();
            next = (next + 150).min(total);
            send(&mut router, &publisher, batch);
            recv(&mut router, &publisher);
        }
        let got = publishes(&recv(&mut router, &sub));
        if got.is_empty() && next == total {
            panic!("stalled after {} of {total}", received.len());
        }
        let acks: Vec<Packet> = got
            .iter()
            .filter(|p| p.qos == QoS::AtLeastOnce)
            .map(|p| puback(p.pkid))
            .collect();
        if !acks.is_empty() {
            send(&mut router, &sub, acks);
        }
        received.extend(got);
    }
    assert_eq!(received.len(), total);
    for (i, p) in received.iter().enumerate() {
        assert_eq!(p.topic, format!("m/{i}"));
        let expected = if i % 3 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!(p.qos, expected, "message {i}");
    }
    assert_eq!(router.obufs[sub.id].inflight_count(), 0);
    assert!(router.connections.contains(sub.id), "no out-of-order ack");
    assert_holders_consistent(&router);
}

// ---------------------------------------------------------------- patch 4

#[test]
fn messages_skipped_by_a_lagging_subscriber_are_counted() {
    let mut config = config();
    config.max_segment_size = 1024;
    config.max_segment_count = 1;
    let lagged = config.lagged_messages.clone();
    let mut router = Router::new(0, config);
    let (sub, _) = connect(&mut router, "slow", true);
    let (publisher, _) = connect(&mut router, "pub", true);
    send(&mut router, &sub, vec![subscribe("l/1", QoS::AtMostOnce)]);
    recv(&mut router, &sub);

    let total = 3000;
    for batch in 0..total / 100 {
        let packets = (0..100)
            .map(|i| {
                let payload = format!("{:0100}", batch * 100 + i);
                Packet::Publish(Publish::new("l/1".to_owned(), payload, false), None)
            })
            .collect();
        send(&mut router, &publisher, packets);
    }
    // the subscriber reads only now
    let mut received = 0;
    loop {
        let got = publishes(&recv(&mut router, &sub)).len();
        if got == 0 {
            break;
        }
        received += got;
    }
    let lagged = lagged.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lagged > 0, "the subscriber lagged");
    assert!(received < total);
    assert_eq!(
        received as u64 + lagged,
        total as u64,
        "every message is received or counted"
    );
}

// ---------------------------------------------------------------- patch 6

#[test]
fn outgoing_buffer_never_holds_more_than_the_link_capacity() {
    let mut config = config();
    config.link_capacity = Some(8);
    let mut router = Router::new(0, config);
    let (sub, _) = connect(&mut router, "sub", true);
    let (publisher, _) = connect(&mut router, "pub", true);
    send(&mut router, &sub, vec![subscribe("c/1", QoS::AtMostOnce)]);
    recv(&mut router, &sub);

    let total = 100;
    let packets = (0..total)
        .map(|i| {
            let payload = format!("{i}");
            Packet::Publish(Publish::new("c/1".to_owned(), payload, false), None)
        })
        .collect();
    send(&mut router, &publisher, packets);

    let mut received = Vec::new();
    loop {
        let buffered = sub.obuf.lock().len();
        assert!(
            buffered <= 8,
            "{buffered} notifications buffered, capacity 8"
        );
        let got = publishes(&recv(&mut router, &sub));
        if got.is_empty() {
            break;
        }
        received.extend(got);
    }
    assert_eq!(received.len(), total, "every message arrives, 8 at a time");
    let in_order = received
        .iter()
        .enumerate()
        .all(|(i, p)| p.payload.as_ref() == i.to_string().as_bytes());
    assert!(in_order, "in publish order");
}

#[test]
fn every_retained_message_arrives_however_small_the_link() {
    let mut config = config();
    config.link_capacity = Some(4);
    let mut router = Router::new(0, config);
    let (publisher, _) = connect(&mut router, "pub", true);
    let retained = 25;
    let packets = (0..retained)
        .map(|i| {
            Packet::Publish(
                Publish::new(format!("r/{i:02}"), "kept".to_owned(), true),
                None,
            )
        })
        .collect();
    send(&mut router, &publisher, packets);

    let (sub, _) = connect(&mut router, "sub", true);
    send(&mut router, &sub, vec![subscribe("r/+", QoS::AtMostOnce)]);
    let mut topics = Vec::new();
    loop {
        assert!(sub.obuf.lock().len() <= 4);
        let got = publishes(&recv(&mut router, &sub));
        if got.is_empty() {
            break;
        }
        topics.extend(
            got.into_iter()
                .map(|p| String::from_utf8_lossy(&p.topic).into_owned()),
        );
    }
    let expected: Vec<String> = (0..retained).map(|i| format!("r/{i:02}")).collect();
    assert_eq!(
        topics, expected,
        "each retained message once, in topic order"
    );

    // and the subscription then gets live messages as usual
    send(
        &mut router,
        &publisher,
        vec![publish("r/99", QoS::AtMostOnce, 0)],
    );
    let live = publishes(&recv(&mut router, &sub));
    assert_eq!(live.len(), 1);
}

// ---------------------------------------------------------------- patch 11

/// A link's late close must not end the connection that took its id. The
/// router ends `old` itself (as it does on a protocol error, or when the
/// same client id connects again) and gives its slot to `new`; only then
/// does `old`'s link report its socket closed, as it does when the socket
/// failed at the same moment.
#[test]
fn a_late_link_close_never_ends_the_connection_that_took_its_id() {
    let mut router = Router::new(0, config());
    let (old, _) = connect(&mut router, "old", true);
    let (old_id, old_link) = (old.id, LinkIdentity(old.ibuf.clone()));
    disconnect(&mut router, old);
    let (new, _) = connect(&mut router, "new", true);
    assert_eq!(new.id, old_id, "connection ids are slots, reused at once");

    router.events(old_id, Event::LinkClosed(old_link));
    run(&mut router);
    assert!(router.connection_map.contains_key("new"), "the late close ended the new connection");
    send(&mut router, &new, vec![subscribe("t/#", QoS::AtMostOnce)]);
    let acks = recv(&mut router, &new);
    assert!(
        acks.iter()
            .any(|n| matches!(n, Notification::DeviceAck(Ack::SubAck(..)))),
        "the new connection is still served: {acks:?}"
    );

    // Its own link's close does end it.
    router.events(new.id, Event::LinkClosed(LinkIdentity(new.ibuf.clone())));
    run(&mut router);
    assert!(!router.connection_map.contains_key("new"));
}
