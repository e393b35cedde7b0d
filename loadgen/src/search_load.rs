//! `loadgen search-load`: `POST /search` (seed 004) end to end under load,
//! as its own clients use it — a fleet of many vehicles is fed in first
//! through `POST /tracking`, then N keep-alive HTTP clients send
//! `POST /search {"lat","lng","limit"}` one after another for a fixed
//! time from random points of the fleet's area, while publishers keep
//! moving vehicles through `POST /tracking` at a rate (the "under load":
//! every search is answered by the ingest task, which applies those
//! positions too).
//!
//! In: a [`SearchLoadConfig`] (from [`SearchLoadArgs`]): where the gateway's
//! HTTP port is, how many vehicles over how large a square, how many
//! search clients, the position rate during the run. Out: a
//! [`SearchLoadReport`]: how long the fleet took to feed in; searches sent,
//! answered 200, refused (by status), answers with fewer than `limit`
//! vehicles; searches/s; the round-trip percentiles; positions sent and
//! refused (429) during the run; printed as a human block and one JSON
//! line ([`crate::results::SearchLoadLine`]).
//!
//! Vehicles are `<prefix>-<n>` spread uniformly over the square; a moved
//! vehicle jumps to a new random point (every move may change its grid
//! cell: the index's dearer case). Random numbers come from a fixed-seed
//! splitmix64, so two runs ask the same questions.
//!
//! The gateway must hold the fleet: `fleet.max_vehicles` ≥ `--vehicles`
//! (a refusal is reported, not waited for), and `http.max_connections` ≥
//! clients + publishers + 1.
//!
//! Bound: one histogram per task (fixed size) and one answer buffer per
//! connection; every wait is bounded ([`IO_TIMEOUT`], [`FEED_TIMEOUT`]);
//! the run stops by itself.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::bench::{new_histogram, Latency};
use crate::http1::Http1;
use crate::results::SearchLoadLine;
use crate::stamp::{add_status, error_line, merge, micros_since, per_s};

/// The longest one request may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The fed fleet must be in the gateway's table within this.
pub const FEED_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections that feed the fleet in before the run.
pub const FEED_CONNECTIONS: usize = 4;
/// How long a feeder waits after a 429 (ingest's queue was full).
const FULL_BACKOFF: Duration = Duration::from_millis(2);
/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;

#[derive(Debug, Args)]
pub struct SearchLoadArgs {
    /// The gateway's HTTP port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Vehicles fed in before the run (the gateway's `fleet.max_vehicles`
    /// must hold them).
    #[arg(long, default_value_t = 10_000)]
    pub vehicles: usize,
    /// Side of the square they are spread over, in km (50: a city).
    #[arg(long, default_value_t = 50.0)]
    pub area_km: f64,
    /// The square's centre (seed 004's example: Santiago).
    #[arg(long, default_value_t = -33.44, allow_negative_numbers = true)]
    pub center_lat: f64,
    #[arg(long, default_value_t = -70.63, allow_negative_numbers = true)]
    pub center_lng: f64,
    /// Keep-alive connections sending `POST /search`, each its next as
    /// soon as the last was answered.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// `limit` of each search.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Connections moving vehicles through `POST /tracking` during the run.
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Positions per second over all publishers during the run; 0: none
    /// (the search alone).
    #[arg(long, default_value_t = 2_000)]
    pub publish_rate: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Vehicle ids are `<prefix>-<n>`.
    #[arg(long, default_value = "sl")]
    pub id_prefix: String,
    /// Name of the system under test, recorded in the JSON line.
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SearchLoadConfig {
    pub http: String,
    pub vehicles: usize,
    pub area: Area,
    pub clients: usize,
    pub limit: usize,
    pub publishers: usize,
    pub publish_rate: u64,
    pub duration: Duration,
    pub id_prefix: String,
}

impl SearchLoadArgs {
    pub fn to_config(&self) -> SearchLoadConfig {
        SearchLoadConfig {
            http: self.http.clone(),
            vehicles: self.vehicles.max(1),
            area: Area {
                center_lat: self.center_lat,
                center_lng: self.center_lng,
                side_km: self.area_km.max(0.1),
            },
            clients: self.clients.max(1),
            limit: self.limit.max(1),
            publishers: self.publishers,
            publish_rate: self.publish_rate,
            duration: Duration::from_secs(self.duration_s.max(1)),
            id_prefix: self.id_prefix.clone(),
        }
    }
}

/// The square the fleet drives in and the searches ask about.
#[derive(Debug, Clone, Copy)]
pub struct Area {
    pub center_lat: f64,
    pub center_lng: f64,
    pub side_km: f64,
}

impl Area {
    /// A uniformly random point of the square.
    fn point(&self, rng: &mut SplitMix) -> (f64, f64) {
        let half_m = self.side_km * 500.0;
        let dlat = (rng.unit() * 2.0 - 1.0) * half_m / M_PER_DEG;
        let dlng = (rng.unit() * 2.0 - 1.0) * half_m
            / (M_PER_DEG * self.center_lat.to_radians().cos().max(0.01));
        (self.center_lat + dlat, self.center_lng + dlng)
    }
}

/// splitmix64: a fixed-seed stream, so runs repeat.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// In [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Default)]
pub struct SearchLoadReport {
    pub vehicles: usize,
    pub area_km: f64,
    pub clients: usize,
    pub limit: usize,
    /// From the first `POST /tracking` of the feed to the whole fleet in
    /// the gateway's table.
    pub seed_elapsed: Duration,
    pub searches: u64,
    pub answered: u64,
    /// Searches answered with another status than 200, by status.
    pub refused: Vec<(u16, u64)>,
    /// 200 answers holding fewer than `limit` vehicles.
    pub short_answers: u64,
    /// From the run's start to the last search answered.
    pub elapsed: Duration,
    pub latency: Latency,
    pub publishers: usize,
    pub offered_positions_per_s: u64,
    pub positions_sent: u64,
    /// Positions answered 429 (ingest's queue was full) during the run.
    pub positions_refused: u64,
    pub publish_elapsed: Duration,
    pub first_error: Option<String>,
}

impl SearchLoadReport {
    pub fn searches_per_s(&self) -> f64 {
        per_s(self.answered, self.elapsed)
    }
    pub fn positions_per_s(&self) -> f64 {
        per_s(
            self.positions_sent - self.positions_refused,
            self.publish_elapsed,
        )
    }

    pub fn to_line(&self, label: Option<&str>) -> SearchLoadLine {
        SearchLoadLine {
            tool: "loadgen search-load".into(),
            scenario: "search-load".into(),
            broker: label.map(str::to_owned),
            vehicles: self.vehicles,
            area_km: self.area_km,
            clients: self.clients,
            limit: self.limit,
            duration_s: self.elapsed.as_secs_f64(),
            seed_s: self.seed_elapsed.as_secs_f64(),
            searches: self.searches,
            answered: self.answered,
            refused: self
                .refused
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            short_answers: self.short_answers,
            searches_per_s: self.searches_per_s(),
            latency_us: self.latency.to_line(),
            publishers: self.publishers,
            offered_positions_per_s: self.offered_positions_per_s,
            positions_sent: self.positions_sent,
            positions_refused: self.positions_refused,
            positions_per_s: self.positions_per_s(),
            first_error: self.first_error.clone(),
        }
    }

    pub fn to_human(&self) -> String {
        format!(
            "search-load: {} vehicles over {} × {} km (fed in {:.1} s), {} clients, limit {}\n  \
             POST /search: {} sent, {} answered ({:.0}/s), refused {:?}, {} short answers\n  \
             round trip: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs\n  \
             meanwhile POST /tracking: {} positions ({:.0}/s of {} offered, {} publishers), {} refused (429)\n{}",
            self.vehicles,
            self.area_km,
            self.area_km,
            self.seed_elapsed.as_secs_f64(),
            self.clients,
            self.limit,
            self.searches,
            self.answered,
            self.searches_per_s(),
            self.refused,
            self.short_answers,
            self.latency.p50,
            self.latency.p99,
            self.latency.p999,
            self.latency.max,
            self.positions_sent,
            self.positions_per_s(),
            self.offered_positions_per_s,
            self.publishers,
            self.positions_refused,
            error_line(&self.first_error)
        )
    }
}

/// The `POST /tracking` body moving vehicle `n` to a point.
fn tracking_body(prefix: &str, n: usize, (lat, lng): (f64, f64)) -> String {
    format!(r#"{{"id":"{prefix}-{n}","lat":{lat:.6},"lng":{lng:.6}}}"#)
}

/// Sends one request under [`IO_TIMEOUT`].
async fn send(
    conn: &mut Http1,
    path: &str,
    body: &[u8],
    answer: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    tokio::time::timeout(IO_TIMEOUT, conn.send("POST", path, body, answer))
        .await
        .with_context(|| format!("{path}: no answer within {IO_TIMEOUT:?}"))?
        .with_context(|| format!("{path}: the connection failed"))
}

/// Feeds vehicles `first, first + step, …` below `vehicles` in, each once,
/// retrying after a 429.
async fn feed(
    mut conn: Http1,
    cfg: SearchLoadConfig,
    first: usize,
    step: usize,
) -> anyhow::Result<()> {
    let mut rng = SplitMix(first as u64);
    let mut answer = Vec::new();
    for n in (first..cfg.vehicles).step_by(step) {
        let body = tracking_body(&cfg.id_prefix, n, cfg.area.point(&mut rng));
        loop {
            match send(&mut conn, "/tracking", body.as_bytes(), &mut answer).await? {
                200 => break,
                429 => tokio::time::sleep(FULL_BACKOFF).await,
                status => anyhow::bail!(
                    "POST /tracking answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
    }
    Ok(())
}

/// A series of the gateway's `/metrics` (0 when absent).
async fn metric(conn: &mut Http1, series: &str) -> anyhow::Result<u64> {
    let mut text = Vec::new();
    let status = tokio::time::timeout(IO_TIMEOUT, conn.send("GET", "/metrics", b"", &mut text))
        .await
        .context("/metrics: no answer")??;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0))
}

/// Feeds the fleet in and waits until the gateway's table holds it.
async fn feed_fleet(cfg: &SearchLoadConfig) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut watcher = Http1::connect(&cfg.http)
        .await
        .with_context(|| format!("cannot reach the HTTP port {}", cfg.http))?;
    let refused_before = metric(&mut watcher, "fleetgate_fleet_vehicles_refused_total").await?;
    let mut feeders = Vec::new();
    for first in 0..FEED_CONNECTIONS {
        let conn = Http1::connect(&cfg.http).await?;
        feeders.push(tokio::spawn(feed(
            conn,
            cfg.clone(),
            first,
            FEED_CONNECTIONS,
        )));
    }
    for f in feeders {
        f.await??;
    }
    // Accepted is not applied: the table is read until it holds them all.
    loop {
        let held = metric(&mut watcher, "fleetgate_fleet_vehicles").await?;
        if held >= cfg.vehicles as u64 {
            return Ok(start.elapsed());
        }
        let refused = metric(&mut watcher, "fleetgate_fleet_vehicles_refused_total").await?;
        anyhow::ensure!(
            refused == refused_before,
            "the gateway refused new vehicles at {held}: raise its fleet.max_vehicles to {} or more",
            cfg.vehicles
        );
        anyhow::ensure!(
            start.elapsed() < FEED_TIMEOUT,
            "only {held} of {} vehicles in the gateway's table after {FEED_TIMEOUT:?}",
            cfg.vehicles
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one search client did.
#[derive(Default)]
struct Searched {
    sent: u64,
    answered: u64,
    refused: Vec<(u16, u64)>,
    short: u64,
    last_answer: Option<Instant>,
    latency: Option<Histogram<u32>>,
    error: Option<String>,
}

async fn search_client(
    mut conn: Http1,
    cfg: SearchLoadConfig,
    seed: u64,
    deadline: Instant,
) -> Searched {
    let mut out = Searched {
        latency: new_histogram(),
        ..Searched::default()
    };
    let mut rng = SplitMix(seed);
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        let (lat, lng) = cfg.area.point(&mut rng);
        let body = format!(r#"{{"lat":{lat:.6},"lng":{lng:.6},"limit":{}}}"#, cfg.limit);
        let sent_at = Instant::now();
        out.sent += 1;
        match send(&mut conn, "/search", body.as_bytes(), &mut answer).await {
            Ok(200) => {
                out.answered += 1;
                // Each element names its vehicle once; counting the key
                // is enough and costs the client far less than parsing.
                let found = count(&answer, br#""Name":"#);
                out.short += u64::from(found < cfg.limit);
            }
            Ok(status) => add_status(&mut out.refused, status, 1),
            Err(e) => {
                out.error.get_or_insert(format!("{e:#}"));
                break;
            }
        }
        let now = Instant::now();
        out.last_answer = Some(now);
        if let Some(h) = out.latency.as_mut() {
            h.saturating_record(micros_since(sent_at, now).max(1));
        }
    }
    out
}

/// Moves random vehicles at `pace` until `deadline`; returns (sent,
/// refused, error).
async fn publisher(
    mut conn: Http1,
    cfg: SearchLoadConfig,
    seed: u64,
    pace: Duration,
    deadline: Instant,
) -> (u64, u64, Option<String>) {
    let mut rng = SplitMix(seed);
    let mut ticker = tokio::time::interval(pace);
    let mut answer = Vec::new();
    let (mut sent, mut refused) = (0, 0);
    while Instant::now() < deadline {
        ticker.tick().await;
        let n = (rng.next() % cfg.vehicles as u64) as usize;
        let body = tracking_body(&cfg.id_prefix, n, cfg.area.point(&mut rng));
        sent += 1;
        match send(&mut conn, "/tracking", body.as_bytes(), &mut answer).await {
            Ok(200) => {}
            Ok(_) => refused += 1,
            Err(e) => return (sent, refused, Some(format!("{e:#}"))),
        }
    }
    (sent, refused, None)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

pub async fn search_load(cfg: SearchLoadConfig) -> anyhow::Result<SearchLoadReport> {
    let seed_elapsed = feed_fleet(&cfg).await?;
    let mut report = SearchLoadReport {
        vehicles: cfg.vehicles,
        area_km: cfg.area.side_km,
        clients: cfg.clients,
        limit: cfg.limit,
        seed_elapsed,
        publishers: if cfg.publish_rate > 0 {
            cfg.publishers.max(1)
        } else {
            0
        },
        offered_positions_per_s: cfg.publish_rate,
        ..SearchLoadReport::default()
    };
    let mut search_conns = Vec::new();
    for _ in 0..cfg.clients {
        search_conns.push(Http1::connect(&cfg.http).await?);
    }
    let mut publish_conns = Vec::new();
    for _ in 0..report.publishers {
        publish_conns.push(Http1::connect(&cfg.http).await?);
    }
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let pace = Duration::from_secs_f64(report.publishers as f64 / cfg.publish_rate.max(1) as f64);
    let publishers: Vec<_> = publish_conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            tokio::spawn(publisher(
                conn,
                cfg.clone(),
                1_000 + i as u64,
                pace,
                deadline,
            ))
        })
        .collect();
    let clients: Vec<_> = search_conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(search_client(conn, cfg.clone(), 2_000 + i as u64, deadline)))
        .collect();

    let mut latency = new_histogram();
    let mut last = start;
    for c in clients {
        let c = c.await?;
        report.searches += c.sent;
        report.answered += c.answered;
        report.short_answers += c.short;
        for (status, n) in c.refused {
            add_status(&mut report.refused, status, n);
        }
        merge(&mut latency, &c.latency);
        last = last.max(c.last_answer.unwrap_or(start));
        report.first_error = report.first_error.take().or(c.error);
    }
    report.elapsed = last - start;
    report.latency = latency.as_ref().map(Latency::of).unwrap_or_default();
    for p in publishers {
        let (sent, refused, error) = p.await?;
        report.positions_sent += sent;
        report.positions_refused += refused;
        report.first_error = report.first_error.take().or(error);
    }
    report.publish_elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_stay_in_the_square_and_runs_repeat() {
        let area = Area {
            center_lat: -33.44,
            center_lng: -70.63,
            side_km: 50.0,
        };
        let (mut a, mut b) = (SplitMix(7), SplitMix(7));
        for _ in 0..10_000 {
            let (lat, lng) = area.point(&mut a);
            assert_eq!((lat, lng), area.point(&mut b));
            assert!((lat + 33.44).abs() <= 25_000.0 / M_PER_DEG);
            assert!((lng + 70.63).abs() <= 0.27, "{lng}");
        }
        assert_eq!(count(br#"[{"Name":"a"},{"Name":"b"}]"#, br#""Name":"#), 2);
    }
}
