//! The HTTP-side benchmarks run briefly against the in-process gateway, so
//! they cannot rot: `loadgen smq-put` and `loadgen ws-fanout` measure
//! something and lose nothing at a modest rate; `loadgen search-load`
//! feeds a fleet in and every search finds `limit` vehicles while
//! positions keep coming. No timing is asserted;
//! the figures are in BENCHMARKS.md.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smq_put_bench_consumes_every_put() {
    let gw = gateway().await;
    let smq = gw.smq_addr.expect("the SMQ port is on by default");
    let report = loadgen::smq_put::smq_put(loadgen::smq_put::SmqPutConfig {
        http: gw.http_addr.to_string(),
        smq: smq.to_string(),
        topic: "bench".into(),
        channel: "bench".into(),
        producers: 2,
        consumers: 2,
        rate: 200,
        duration: Duration::from_secs(1),
        payload_bytes: 64,
    })
    .await
    .unwrap();
    assert!(report.accepted > 50, "{}", report.to_human());
    assert_eq!(
        (report.received, report.lost),
        (report.accepted, 0),
        "{}",
        report.to_human()
    );
    assert!(report.first_error.is_none(), "{}", report.to_human());
    assert!(report.end_to_end.n == report.received && report.end_to_end.p50 > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_fanout_bench_delivers_to_every_subscriber() {
    let mut config = test_config();
    config.pubsub.max_connections = NonZeroUsize::new(11).unwrap();
    let gw = gateway_with(config).await;
    let report = loadgen::ws_fanout::ws_fanout(loadgen::ws_fanout::WsFanoutConfig {
        url: format!("ws://{}/message", gw.http_addr),
        subscribers: 10,
        topic: "bench/fanout".into(),
        rate: 50,
        duration: Duration::from_secs(1),
        payload_bytes: 64,
    })
    .await
    .unwrap();
    let human = report.to_human();
    assert!(report.published > 20, "{human}");
    assert_eq!(report.delivered, report.published * 10, "{human}");
    assert_eq!((report.lost, report.error_frames), (0, 0), "{human}");
    assert!(report.first_error.is_none(), "{human}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_load_bench_finds_ten_vehicles_in_every_answer() {
    let gw = gateway().await;
    let report = loadgen::search_load::search_load(loadgen::search_load::SearchLoadConfig {
        http: gw.http_addr.to_string(),
        // Under the default fleet.max_vehicles (5 000); over 50 × 50 km
        // every point has far more than 10 within the 15 km of /search.
        vehicles: 2_000,
        area: loadgen::search_load::Area {
            center_lat: -33.44,
            center_lng: -70.63,
            side_km: 50.0,
        },
        clients: 2,
        limit: 10,
        publishers: 1,
        publish_rate: 200,
        duration: Duration::from_secs(1),
        id_prefix: "smoke".into(),
    })
    .await
    .unwrap();
    let human = report.to_human();
    assert!(report.answered > 20, "{human}");
    assert!(report.refused.is_empty(), "{human}");
    assert_eq!(report.short_answers, 0, "{human}");
    assert!(report.positions_sent > 50, "{human}");
    assert!(report.first_error.is_none(), "{human}");
    assert!(report.latency.n == report.searches && report.latency.p50 > 0);
}
