//! The two phases, A (sustained rate) and B (backlog drain under live
//! traffic): each runs, prints its table and adds its part of the result.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use firmware_sim::clock::now_ms;
use loadgen::results::{to_line, BridgeBenchLine, DrainLatencyLine, PhaseALine, PhaseBLine};

use crate::args::Args;
use crate::counters::{cpu_now, cpu_split, rate_10_90, sample, Received};
use crate::dashboard::{latency, watch_ws, Dashboard};
use crate::load::{live_traffic, push_bulk};
use crate::rig::{wait_for, Proxy};

pub(super) async fn phases(
    args: &Args,
    tag: &str,
    gw: &fleetgate::Gateway,
    proxy: &Proxy,
    received: &Arc<Received>,
    rabbit: &Option<String>,
) -> anyhow::Result<(String, BridgeBenchLine)> {
    let timeout = Duration::from_secs(args.timeout_s);
    let m = &*gw.metrics;
    let mut table = String::new();
    let mut result = BridgeBenchLine {
        tag: tag.to_owned(),
        ..BridgeBenchLine::default()
    };
    let fmt_rate = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{:.0}", r));

    if args.phases.contains('a') {
        eprintln!("phase A: {} positions as fast as acked…", args.sustained);
        let per_vehicle = (args.sustained / args.vehicles.max(1)).max(1) as u32;
        let total = per_vehicle as u64 * args.vehicles;
        let base = sample(m, received);
        let cpu0 = cpu_now(rabbit);
        let mut samples = vec![base];
        let push = {
            let addr = gw.mqtt_addr;
            let prefix = format!("{tag}-a");
            let args = args.clone();
            tokio::spawn(async move {
                push_bulk(addr, &prefix, args.vehicles, per_vehicle, &args).await
            })
        };
        // Sample until every pushed position is spooled, confirmed and received.
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = sample(m, received);
            samples.push(s);
            let spooled = s.spooled - base.spooled;
            if push.is_finished()
                && spooled >= total
                && s.confirmed >= s.spooled
                && (args.no_consume || s.received - base.received >= spooled)
            {
                break;
            }
            if Instant::now() > deadline {
                timed_out = true;
                break;
            }
        }
        let end = samples.last().copied().unwrap_or(base);
        let cpu1 = cpu_now(rabbit);
        let (acked, push_time) = push.await??;
        let secs = end.at.duration_since(base.at).as_secs_f64();
        let confirmed = end.confirmed - base.confirmed;
        let r_ingest = acked as f64 / push_time.as_secs_f64();
        let r_spooled = rate_10_90(&samples, total, |s| s.spooled);
        let r_confirmed = rate_10_90(&samples, total, |s| s.confirmed);
        let r_received = rate_10_90(&samples, total, |s| s.received);
        let overall = confirmed as f64 / secs;
        let cpu = cpu_split(&cpu0, &cpu1, secs);
        let cpu_shown = to_line(&cpu);
        let verdict = match r_confirmed {
            Some(r) if r >= 20_000.0 => "met",
            _ => "NOT met",
        };
        table += &format!(
            "Phase A: sustained publish rate, link up ({acked} positions, {} vehicles, {} connections, QoS 1)\n\
             | rate | messages/s |\n|---|---:|\n\
             | ingest (edge acked) | {:.0} |\n\
             | spooled | {} |\n\
             | confirmed by RabbitMQ | {} |\n\
             | received by the consumer | {} |\n\
             | confirmed, first push → last confirm | {:.0} |\n\
             target ≥ 20 000 confirmed/s: {verdict}{}\n\
             CPU (% of one core): {cpu_shown}\n\n",
            args.vehicles,
            args.connections,
            r_ingest,
            fmt_rate(r_spooled),
            fmt_rate(r_confirmed),
            fmt_rate(r_received),
            overall,
            if timed_out { " (TIMED OUT)" } else { "" },
        );
        result.phase_a = Some(PhaseALine {
            positions: acked,
            records_confirmed: confirmed,
            ingest_per_s: r_ingest.round(),
            spooled_per_s: r_spooled.map(f64::round),
            confirmed_per_s: r_confirmed.map(f64::round),
            received_per_s: r_received.map(f64::round),
            confirmed_per_s_overall: overall.round(),
            seconds: round1(secs),
            target_20000_met: verdict == "met",
            timed_out,
            cpu,
        });
    }

    if args.phases.contains('b') {
        eprintln!(
            "phase B: link cut, {} positions into the spool…",
            args.backlog
        );
        proxy.cut();
        wait_for("the uplink to notice the cut", timeout, || {
            m.bridge_connected.load(Ordering::Relaxed) == 0
        })
        .await?;
        let base = sample(m, received);
        let per_vehicle = (args.backlog / args.vehicles.max(1)).max(1) as u32;
        let total = per_vehicle as u64 * args.vehicles;
        let (_, backlog_push) = push_bulk(
            gw.mqtt_addr,
            &format!("{tag}-b"),
            args.vehicles,
            per_vehicle,
            args,
        )
        .await?;
        wait_for("the backlog to be spooled", timeout, || {
            m.bridge_records_spooled_total.load(Ordering::Relaxed) - base.spooled >= total
        })
        .await?;
        let backlog_spooled = m.bridge_records_spooled_total.load(Ordering::Relaxed) - base.spooled;

        // The dashboard, then the live traffic.
        let dash = Arc::new(Dashboard::default());
        let live_prefix = format!("{tag}-l");
        let ws = tokio::spawn(watch_ws(
            format!("ws://{}/ws", gw.http_addr),
            live_prefix.clone(),
            dash.clone(),
        ));
        let live_acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let live = tokio::spawn(live_traffic(
            gw.mqtt_addr,
            live_prefix,
            args.live_vehicles,
            args.live_rate,
            args.window,
            live_acked.clone(),
            stop.clone(),
        ));
        eprintln!(
            "phase B: backlog spooled ({backlog_spooled} records); live traffic, {} s before the restore…",
            args.before_s
        );
        tokio::time::sleep(Duration::from_secs(1)).await; // warm-up: vehicles come online
        let before_from = now_ms();
        let live_before0 = (Instant::now(), live_acked.load(Ordering::Relaxed));
        let cpu_before0 = cpu_now(rabbit);
        tokio::time::sleep(Duration::from_secs_f64(args.before_s)).await;
        let live_before1 = (Instant::now(), live_acked.load(Ordering::Relaxed));
        let cpu_before1 = cpu_now(rabbit);

        // Restore, and time the drain: every record spooled before the
        // restore confirmed (the spool is FIFO).
        let restore_ms = now_ms();
        let at_restore = sample(m, received);
        let cpu_drain0 = cpu_before1.clone();
        eprintln!(
            "phase B: restoring the link ({} records in the spool)…",
            at_restore.spooled - at_restore.confirmed
        );
        proxy.restore();
        let mut samples = vec![at_restore];
        let mut connected_at = None;
        let mut gauge_low_at = None;
        let live_level = (args.live_rate * 2).max(1_000);
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let drained = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let s = sample(m, received);
            samples.push(s);
            if connected_at.is_none() && s.connected == 1 {
                connected_at = Some(s.at);
            }
            if gauge_low_at.is_none()
                && s.spool_records <= live_level
                && s.at > at_restore.at + Duration::from_millis(1100)
            {
                gauge_low_at = Some(s.at);
            }
            if s.confirmed >= at_restore.spooled {
                break s;
            }
            if Instant::now() > deadline {
                timed_out = true;
                break s;
            }
        };
        let drained_ms = now_ms();
        let cpu_drain1 = cpu_now(rabbit);
        let live_drain1 = (Instant::now(), live_acked.load(Ordering::Relaxed));
        // Wait for the gauge (updated once a second) too, bounded.
        let gauge_deadline = Instant::now() + Duration::from_secs(3);
        while gauge_low_at.is_none() && Instant::now() < gauge_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = sample(m, received);
            if s.spool_records <= live_level {
                gauge_low_at = Some(s.at);
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(args.after_s)).await;
        let after_to = now_ms();
        stop.store(true, Ordering::Relaxed);
        let live_result = live.await?;
        ws.abort();

        let drain_records = drained.confirmed - at_restore.confirmed;
        let from_restore = drained.at.duration_since(at_restore.at).as_secs_f64();
        let from_connect = connected_at.map(|c| drained.at.duration_since(c).as_secs_f64());
        let drain_rate = from_connect.map(|s| drain_records as f64 / s);
        let drain_rate_restore = drain_records as f64 / from_restore;
        let live_rate_before = (live_before1.1 - live_before0.1) as f64
            / live_before1.0.duration_since(live_before0.0).as_secs_f64();
        let live_rate_drain = (live_drain1.1 - live_before1.1) as f64
            / live_drain1.0.duration_since(live_before1.0).as_secs_f64();
        let ratio = drain_rate.map(|d| d / live_rate_drain);
        let lat_before = latency(&dash, before_from, restore_ms);
        let lat_drain = latency(&dash, restore_ms, drained_ms);
        let lat_after = latency(&dash, drained_ms, after_to);
        let cpu_before = cpu_split(&cpu_before0, &cpu_before1, args.before_s);
        let cpu_drain = cpu_split(&cpu_drain0, &cpu_drain1, from_restore);
        let (cpu_before_shown, cpu_drain_shown) = (to_line(&cpu_before), to_line(&cpu_drain));
        let ratio_met = ratio.is_some_and(|r| r >= 5.0) && !timed_out;
        let p99 = |v: &DrainLatencyLine| v.p99_ms;
        let p50 = |v: &DrainLatencyLine| v.p50_ms;
        // The max as JSON has it: "null" when there were no samples.
        let max = |v: &DrainLatencyLine| to_line(&v.max_ms);
        let show = |v: Option<u64>| v.map_or("-".into(), |x| x.to_string());
        table += &format!(
            "Phase B: drain of a {backlog_spooled}-record backlog under live traffic ({} positions/s from {} vehicles)\n\
             | figure | value |\n|---|---:|\n\
             | backlog pushed into the spool (link cut) | {backlog_spooled} records in {:.1} s |\n\
             | records in the spool at restore | {} |\n\
             | restore → uplink connected | {} s |\n\
             | drain time, connected → all confirmed | {} s |\n\
             | drain time, restore → all confirmed | {:.2} s |\n\
             | spool gauge back to live level (≤ {live_level}) after restore | {} s |\n\
             | drain rate (confirmed/s from connect) | {} |\n\
             | drain rate (confirmed/s from restore) | {:.0} |\n\
             | live rate before / during drain (acked/s) | {:.0} / {:.0} |\n\
             | drain / live | {} |\n\
             | dashboard latency p50 / p99 / max, before | {} / {} / {} ms ({} samples) |\n\
             | dashboard latency p50 / p99 / max, during drain | {} / {} / {} ms ({} samples) |\n\
             | dashboard latency p50 / p99 / max, after | {} / {} / {} ms ({} samples) |\n\
             | WebSocket lagged (dropped updates) | {} |\n\
             target drain ≥ 5 × live: {}{}\n\
             CPU before (% of one core): {cpu_before_shown}\n\
             CPU during drain (% of one core): {cpu_drain_shown}\n",
            args.live_rate,
            args.live_vehicles,
            backlog_push.as_secs_f64(),
            at_restore.spooled - at_restore.confirmed,
            connected_at.map_or("-".into(), |c| format!("{:.2}", c.duration_since(at_restore.at).as_secs_f64())),
            from_connect.map_or("-".into(), |s| format!("{s:.2}")),
            from_restore,
            gauge_low_at.map_or("-".into(), |g| format!("{:.1}", g.duration_since(at_restore.at).as_secs_f64())),
            fmt_rate(drain_rate),
            drain_rate_restore,
            live_rate_before,
            live_rate_drain,
            ratio.map_or("-".into(), |r| format!("{r:.1}")),
            show(p50(&lat_before)), show(p99(&lat_before)), max(&lat_before), lat_before.count,
            show(p50(&lat_drain)), show(p99(&lat_drain)), max(&lat_drain), lat_drain.count,
            show(p50(&lat_after)), show(p99(&lat_after)), max(&lat_after), lat_after.count,
            dash.lagged.load(Ordering::Relaxed),
            if ratio_met { "met" } else { "NOT met" },
            if timed_out { " (TIMED OUT)" } else { "" },
        );
        result.phase_b = Some(PhaseBLine {
            backlog_records: Some(backlog_spooled),
            backlog_push_s: round1(backlog_push.as_secs_f64()),
            spool_records_at_restore: at_restore.spooled - at_restore.confirmed,
            reconnect_s: connected_at
                .map(|c| round2(c.duration_since(at_restore.at).as_secs_f64())),
            drain_s_from_connect: from_connect.map(round2),
            drain_s_from_restore: Some(round2(from_restore)),
            spool_gauge_low_s: gauge_low_at
                .map(|g| round1(g.duration_since(at_restore.at).as_secs_f64())),
            drain_per_s: drain_rate.map(f64::round),
            drain_per_s_from_restore: drain_rate_restore.round(),
            live_per_s_before: live_rate_before.round(),
            live_per_s_during_drain: live_rate_drain.round(),
            drain_over_live: ratio.map(|r| (r * 10.0).round() / 10.0),
            latency_before: Some(lat_before),
            latency_during_drain: Some(lat_drain),
            latency_after: lat_after,
            ws_lagged: dash.lagged.load(Ordering::Relaxed),
            ws_frames: dash.frames.load(Ordering::Relaxed),
            target_5x_met: ratio_met,
            timed_out,
            live_traffic_error: live_result.err().map(|e| e.to_string()),
            cpu_before,
            cpu_during_drain: cpu_drain,
        });
    }
    Ok((table, result))
}

pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
