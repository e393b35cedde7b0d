//! One simulated vehicle: the driver task that owns its [`Device`] on a
//! route, and the task that polls its MQTT event loop.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use fleetgate_wire::json::{decode_command_any, StatusJson};
use fleetgate_wire::{FirmwareVersion, Status};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::clock::now_ms;
use crate::device::{BoundedRing, Counters, Device, DeviceConfig, Uplink};
use crate::prng::SplitMix64;
use crate::route::RouteSim;

use super::uplink::{postcard_bytes, Link, LinkNews, MqttUplink};
use super::{
    Fleet, ACK_GRACE, FIRST_BACKOFF, KEEP_ALIVE, MAX_BACKOFF, MAX_PACKET_BYTES, REPLAY_RETRY,
    REQUEST_QUEUE,
};

pub(super) const FIRMWARE: FirmwareVersion = FirmwareVersion {
    major: 0,
    minor: 1,
    patch: 0,
};

/// Whether vehicle `index` is one of a `share` of speeders, spread evenly:
/// `round(n × share)` of any `n` consecutive vehicles, give or take one.
pub(super) fn is_speeder(index: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((index + 1) as f64 * share).floor() > (index as f64 * share).floor()
}

pub(super) async fn run_vehicle(index: usize, fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let vid = format!("{}{:04}", fleet.cfg.id_prefix, fleet.cfg.first_id + index);
    let pos_topic = format!("v/{vid}/pos");
    let status_topic = format!("v/{vid}/status");
    let seed = fleet.cfg.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut device = Device::new(
        DeviceConfig {
            report_interval_ms: fleet.interval_ms,
            firmware: FIRMWARE,
            ..DeviceConfig::default()
        },
        BoundedRing::with_capacity(fleet.cfg.ring_capacity),
    );
    let mut route = RouteSim::new(seed);
    if is_speeder(index, fleet.cfg.speeders) {
        route = route.with_pace(SplitMix64::new(!seed).range_f64(1.2, 1.4));
    }

    let mut options = MqttOptions::new(vid.clone(), fleet.host.clone(), fleet.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(32)
        .set_last_will(LastWill::new(
            status_topic.clone(),
            will_payload(&device.last_will(), fleet.cfg.json),
            QoS::AtLeastOnce,
            false,
        ));
    let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
    let link = Arc::new(Link::default());
    let (news_tx, mut news_rx) = mpsc::channel(4);
    let (loop_stop_tx, loop_stop_rx) = watch::channel(false);
    let event_task = tokio::spawn(poll_events(
        eventloop,
        client.clone(),
        Arc::clone(&link),
        Arc::clone(&fleet),
        news_tx,
        loop_stop_rx,
        vid.clone(),
        seed,
    ));

    // Spread first reports over one interval so a fleet does not publish in lockstep.
    let mut rng = SplitMix64::new(seed);
    let mut next_wake =
        Instant::now() + Duration::from_millis(rng.below(fleet.interval_ms as usize + 1) as u64);
    let mut reported = Counters::default();
    let limit = fleet.cfg.positions_per_vehicle.map(u64::from);
    loop {
        if limit.is_some_and(|n| device.counters().produced >= n) {
            break;
        }
        tokio::select! {
            () = sleep_until(next_wake) => {}
            news = news_rx.recv() => match news {
                Some(LinkNews::Connected) => {}
                Some(LinkNews::Command(command)) => device.handle_command(&command),
                None => break,
            },
            _ = stop.changed() => break,
        }
        let mut uplink = MqttUplink {
            client: &client,
            link: &link,
            fleet: &fleet,
            pos_topic: &pos_topic,
            status_topic: &status_topic,
        };
        let now = now_ms();
        device.flush(&mut uplink);
        device.tick(now, &mut route, &mut uplink);
        fleet
            .counters
            .add_device_delta(&reported, device.counters());
        reported = *device.counters();
        let until_due = device
            .next_due_ms()
            .map_or(0, |due| due.saturating_sub(now_ms()));
        let mut wait = Duration::from_millis(until_due);
        if device.buffered_len() > 0 && uplink.is_connected() {
            wait = wait.min(REPLAY_RETRY);
        }
        next_wake = Instant::now() + wait;
    }

    // Draining (`drain`): flush the offline ring until it is empty or the
    // time is up; the event loop reconnects meanwhile if the link is down.
    if let Some(drain) = fleet.cfg.drain {
        let deadline = Instant::now() + drain;
        while device.buffered_len() > 0 && Instant::now() < deadline {
            let mut uplink = MqttUplink {
                client: &client,
                link: &link,
                fleet: &fleet,
                pos_topic: &pos_topic,
                status_topic: &status_topic,
            };
            device.flush(&mut uplink);
            fleet
                .counters
                .add_device_delta(&reported, device.counters());
            reported = *device.counters();
            if device.buffered_len() == 0 {
                break;
            }
            // News (a reconnect) must not back up while we wait.
            while news_rx.try_recv().is_ok() {}
            sleep(REPLAY_RETRY).await;
        }
    }

    // Leaving: let outstanding QoS 1 publishes be acknowledged, then say
    // goodbye explicitly (a clean DISCONNECT suppresses the last will).
    let ack_deadline = Instant::now() + ACK_GRACE;
    while link.connected.load(Relaxed)
        && link.acknowledged.load(Relaxed) < link.awaiting_ack.load(Relaxed)
        && Instant::now() < ack_deadline
    {
        sleep(Duration::from_millis(10)).await;
    }
    if link.connected.load(Relaxed) {
        let offline = Status {
            time_ms: now_ms(),
            ..device.last_will()
        };
        let payload = will_payload(&offline, fleet.cfg.json);
        if client
            .try_publish(&status_topic, QoS::AtMostOnce, false, payload)
            .is_ok()
        {
            fleet.counters.status_sent.fetch_add(1, Relaxed);
        }
        let _ = client.try_disconnect();
    }
    fleet
        .counters
        .unsent_at_end
        .fetch_add(device.buffered_len() as u64, Relaxed);
    let _ = loop_stop_tx.send(true);
    let mut event_task = event_task;
    if timeout(Duration::from_secs(2), &mut event_task)
        .await
        .is_err()
    {
        // Dropping a JoinHandle does not stop the task: abort it, or it
        // would go on reconnecting after the run.
        tracing::debug!(%vid, "event loop did not finish after disconnect");
        event_task.abort();
    }
}

pub(super) fn will_payload(status: &Status, json: bool) -> Vec<u8> {
    if json {
        serde_json::to_vec(&StatusJson::from_status(status)).unwrap_or_default()
    } else {
        postcard_bytes(status)
    }
}

/// Polls one vehicle's event loop: tracks the link, answers CONNACK with a
/// subscription and an online status, forwards commands, counts PubAcks,
/// backs off after errors, and plays the outage.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
async fn poll_events(
    mut eventloop: EventLoop,
    client: AsyncClient,
    link: Arc<Link>,
    fleet: Arc<Fleet>,
    news: mpsc::Sender<LinkNews>,
    mut stop: watch::Receiver<bool>,
    vid: String,
    seed: u64,
) {
    let cmd_topic = format!("v/{vid}/cmd");
    let status_topic = format!("v/{vid}/status");
    let counters = &fleet.counters;
    let mut rng = SplitMix64::new(seed.rotate_left(17));
    let mut backoff = FIRST_BACKOFF;
    let mut outage_done = fleet.cfg.outage.is_none();
    let set_connected = |up: bool| {
        if link.connected.swap(up, Relaxed) != up {
            if up {
                counters.connected_now.fetch_add(1, Relaxed);
            } else {
                counters.connected_now.fetch_sub(1, Relaxed);
            }
        }
    };
    let mut ever_connected = false;
    loop {
        if !outage_done {
            if let Some((from, until)) = fleet.outage_window() {
                if Instant::now() >= from {
                    outage_done = true;
                    eventloop.clean();
                    set_connected(false);
                    tokio::select! {
                        () = sleep_until(until) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            }
        }
        let outage_start = fleet
            .outage_window()
            .filter(|_| !outage_done)
            .map(|(from, _)| from);
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = sleep_until(outage_start.unwrap_or_else(Instant::now)), if outage_start.is_some() => continue,
            _ = stop.changed(), if !link.connected.load(Relaxed) => break,
        };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                backoff = FIRST_BACKOFF;
                set_connected(true);
                counters.connects.fetch_add(1, Relaxed);
                if !ever_connected {
                    ever_connected = true;
                    counters.ever_connected.fetch_add(1, Relaxed);
                }
                // Clean session: the subscription is gone after every reconnect.
                let _ = client.try_subscribe(cmd_topic.as_str(), QoS::AtLeastOnce);
                let online = Status {
                    time_ms: now_ms(),
                    online: true,
                    ignition: true,
                    supply_mv: DeviceConfig::default().supply_mv,
                    firmware: FIRMWARE,
                };
                if client
                    .try_publish(
                        status_topic.as_str(),
                        fleet.qos,
                        false,
                        will_payload(&online, fleet.cfg.json),
                    )
                    .is_ok()
                {
                    counters.status_sent.fetch_add(1, Relaxed);
                    if fleet.qos == QoS::AtLeastOnce {
                        link.awaiting_ack.fetch_add(1, Relaxed);
                    }
                }
                let _ = news.try_send(LinkNews::Connected);
            }
            Ok(Event::Incoming(Incoming::Publish(publish))) if publish.topic == cmd_topic => {
                match decode_command_any(&publish.payload) {
                    Ok(command) => {
                        // A full queue means the driver is behind; dropping a
                        // command then is what a busy device would do too.
                        let _ = news.try_send(LinkNews::Command(command));
                    }
                    Err(_) => {
                        counters.bad_commands.fetch_add(1, Relaxed);
                    }
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(_))) => {
                counters.acknowledged.fetch_add(1, Relaxed);
                link.acknowledged.fetch_add(1, Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                set_connected(false);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                set_connected(false);
                if *stop.borrow() {
                    break;
                }
                counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(%vid, error = %e, "connection error; backing off {backoff:?}");
                // rumqttc would reconnect at once on the next poll: wait first,
                // with jitter so a fleet does not reconnect in lockstep.
                let jittered = backoff.mul_f64(rng.range_f64(0.5, 1.0));
                tokio::select! {
                    () = sleep(jittered) => {}
                    _ = stop.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    set_connected(false);
}
