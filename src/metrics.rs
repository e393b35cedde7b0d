//! Counters and gauges, rendered in Prometheus text format at `/metrics`.
//!
//! In: increments from every module (relaxed atomics, no lock, no
//! allocation). Out: [`Metrics::render`]. Bound: a fixed set of `AtomicU64`s
//! declared below; no label takes a value from the network, so the series
//! count cannot grow with traffic.
//!
//! Every drop anywhere in the gateway has a counter here: a drop that is not
//! counted is a bug.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A labelled series names its family; a plain one is its own family.
macro_rules! series {
    ($field:ident) => {
        (stringify!($field), None)
    };
    ($field:ident $family:literal $label:literal) => {
        ($family, Some($label))
    };
}

macro_rules! metrics {
    ($( $(#[doc = $doc:literal])+ $field:ident: $kind:ident $(in $family:literal {$label:literal})?; )+) => {
        /// All of the gateway's metrics; one instance shared behind an `Arc`.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $field: AtomicU64, )+
        }

        impl Metrics {
            /// Prometheus text exposition format, version 0.0.4.
            pub fn render(&self) -> String {
                let mut out = String::with_capacity(8 * 1024);
                let mut last_family = "";
                $(
                    // A labelled series names its family; a plain one is its own.
                    let (family, label): (&str, Option<&str>) =
                        series!($field $($family $label)?);
                    if family != last_family {
                        let help = concat!($($doc),+).trim();
                        let _ = writeln!(out, "# HELP fleetgate_{family} {help}");
                        let _ = writeln!(out, "# TYPE fleetgate_{family} {}", stringify!($kind));
                        last_family = family;
                    }
                    let value = self.$field.load(Ordering::Relaxed);
                    match label {
                        Some(l) => { let _ = writeln!(out, "fleetgate_{family}{{{l}}} {value}"); }
                        None => { let _ = writeln!(out, "fleetgate_{family} {value}"); }
                    }
                )+
                let _ = last_family;
                out
            }
        }
    };
}

metrics! {
    /// Worst-case bytes of every bounded structure, computed from the configuration (see `fleetgate check-config`).
    memory_bound_bytes: gauge;
    /// Open MQTT connections at the edge, by kind.
    connections_vehicle: gauge in "connections" {"kind=\"vehicle\""};
    /// Open MQTT connections at the edge, by kind.
    connections_handed_off: gauge in "connections" {"kind=\"handed_off\""};
    /// Open MQTT connections at the edge, by kind.
    connections_pending: gauge in "connections" {"kind=\"pending\""};
    /// Connections accepted at the edge since start.
    connections_accepted_total: counter;
    /// Connections refused, by reason.
    connections_refused_total_limit: counter in "connections_refused_total" {"reason=\"limit\""};
    /// Connections refused, by reason.
    connections_refused_total_connect_timeout: counter in "connections_refused_total" {"reason=\"connect_timeout\""};
    /// Connections refused, by reason.
    connections_refused_total_bad_connect: counter in "connections_refused_total" {"reason=\"bad_connect\""};
    /// Connections refused, by reason.
    connections_refused_total_protocol_version: counter in "connections_refused_total" {"reason=\"protocol_version\""};
    /// Connections refused, by reason.
    connections_refused_total_broker_unavailable: counter in "connections_refused_total" {"reason=\"broker_unavailable\""};
    /// Connections refused, by reason.
    connections_refused_total_bad_client_id: counter in "connections_refused_total" {"reason=\"bad_client_id\""};
    /// Connections refused, by reason.
    connections_refused_total_not_authorized: counter in "connections_refused_total" {"reason=\"not_authorized\""};
    /// Connections refused, by reason.
    connections_refused_total_bad_credentials: counter in "connections_refused_total" {"reason=\"bad_credentials\""};
    /// Connections refused, by reason.
    connections_refused_total_will_denied: counter in "connections_refused_total" {"reason=\"will_denied\""};
    /// Connections refused, by reason.
    connections_refused_total_auth_busy: counter in "connections_refused_total" {"reason=\"auth_busy\""};
    /// Connections refused, by reason.
    connections_refused_total_source_banned: counter in "connections_refused_total" {"reason=\"source_banned\""};
    /// Sources banned for opening more than mqtt.max_connects_per_source_per_minute connections in a minute.
    sources_banned_total: counter;
    /// Connections admitted without a per-source count because mqtt.max_tracked_sources addresses are tracked.
    sources_untracked_total: counter;
    /// Times a client was not read for a while because it sent faster than mqtt.max_messages_per_s_per_client or max_bytes_per_s_per_client.
    clients_throttled_total: counter;
    /// Connections closed because their user left the password file (on reload).
    connections_closed_revoked_total: counter;
    /// Password hashes computed (logins not answered from the cache).
    auth_verifications_total: counter;
    /// Logins answered from the cache of recent successful logins.
    auth_cache_hits_total: counter;
    /// Successful reloads of the password and ACL files (SIGHUP).
    auth_reloads_total: counter;
    /// Retained messages not delivered because their publisher may no longer write the topic (auth.check_retain_source).
    retained_source_denied_total: counter;
    /// Messages the broker had for a client that the ACL does not let it read (not delivered).
    acl_read_denied_total: counter;
    /// HTTP connections and requests refused: no or a bad token, a role that may not, the connection limit, a request head too slow.
    http_refused_total_no_token: counter in "http_refused_total" {"reason=\"no_token\""};
    /// HTTP connections and requests refused: no or a bad token, a role that may not, the connection limit, a request head too slow.
    http_refused_total_bad_token: counter in "http_refused_total" {"reason=\"bad_token\""};
    /// HTTP connections and requests refused: no or a bad token, a role that may not, the connection limit, a request head too slow.
    http_refused_total_forbidden: counter in "http_refused_total" {"reason=\"forbidden\""};
    /// HTTP connections and requests refused: no or a bad token, a role that may not, the connection limit, a request head too slow.
    http_refused_total_limit: counter in "http_refused_total" {"reason=\"limit\""};
    /// HTTP connections and requests refused: no or a bad token, a role that may not, the connection limit, a request head too slow.
    http_refused_total_header_timeout: counter in "http_refused_total" {"reason=\"header_timeout\""};
    /// TLS connections open now, handshakes included (at most tls.max_connections).
    tls_connections: gauge;
    /// TLS handshakes that finished (MQTT TLS port and HTTPS).
    tls_handshakes_total: counter;
    /// Successful reloads of the TLS certificate files (SIGHUP).
    tls_reloads_total: counter;
    /// TLS connections refused or failed before their first byte of MQTT or HTTP: over tls.max_connections, a handshake not finished in time, a failed handshake (bad certificate, not TLS).
    tls_refused_total_limit: counter in "tls_refused_total" {"reason=\"limit\""};
    /// TLS connections refused or failed before their first byte of MQTT or HTTP: over tls.max_connections, a handshake not finished in time, a failed handshake (bad certificate, not TLS).
    tls_refused_total_handshake_timeout: counter in "tls_refused_total" {"reason=\"handshake_timeout\""};
    /// TLS connections refused or failed before their first byte of MQTT or HTTP: over tls.max_connections, a handshake not finished in time, a failed handshake (bad certificate, not TLS).
    tls_refused_total_handshake_failed: counter in "tls_refused_total" {"reason=\"handshake_failed\""};
    /// Connections closed by the edge for a protocol violation or a malformed packet.
    connections_closed_malformed_total: counter;
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_second_connect: counter in "protocol_violations_total" {"reason=\"second_connect\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_server_packet: counter in "protocol_violations_total" {"reason=\"server_packet\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_reserved_packet_type: counter in "protocol_violations_total" {"reason=\"reserved_packet_type\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_reserved_flags: counter in "protocol_violations_total" {"reason=\"reserved_flags\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_publish_qos3: counter in "protocol_violations_total" {"reason=\"publish_qos3\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_dup_at_qos0: counter in "protocol_violations_total" {"reason=\"dup_at_qos0\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_empty_topic: counter in "protocol_violations_total" {"reason=\"empty_topic\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_wildcard_in_topic: counter in "protocol_violations_total" {"reason=\"wildcard_in_topic\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_bad_filter: counter in "protocol_violations_total" {"reason=\"bad_filter\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_bad_utf8: counter in "protocol_violations_total" {"reason=\"bad_utf8\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_packet_id_zero: counter in "protocol_violations_total" {"reason=\"packet_id_zero\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_no_filters: counter in "protocol_violations_total" {"reason=\"no_filters\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_bad_requested_qos: counter in "protocol_violations_total" {"reason=\"bad_requested_qos\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_connect_flags: counter in "protocol_violations_total" {"reason=\"connect_flags\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_malformed: counter in "protocol_violations_total" {"reason=\"malformed\""};
    /// Connections closed for breaking an MQTT 3.1.1 rule that says the server MUST close, by rule (`edge::conformance`).
    protocol_violations_total_unsolicited_ack: counter in "protocol_violations_total" {"reason=\"unsolicited_ack\""};
    /// Vehicle connections closed because their large partial frame did not fit `mqtt.large_frame_pool_bytes`.
    connections_closed_frame_pool_total: counter;
    /// Connections closed because the client was silent past 1.5 × keep-alive.
    connections_closed_keepalive_total: counter;
    /// Clients handed from the edge to the embedded rumqttd.
    handoffs_total: counter;
    /// Last wills fired by the edge after a vehicle vanished.
    wills_published_total: counter;
    /// Requests refused by the ACL: MQTT subscriptions and publishes at the edge, SMQ `SUB`s, `/put` and `/message` publishes and subscriptions.
    acl_denied_total: counter;
    /// Subscriptions refused because `broker.max_filters` filters are held in the broker now.
    filters_refused_total: counter;
    /// Distinct subscription filters held in the embedded broker now (at most `broker.max_filters`).
    broker_filters_live: gauge;
    /// Messages the embedded broker skipped for subscribers so slow that their next messages were evicted from its log (copied from rumqttd every second).
    broker_lagged_messages_total: counter;
    /// Retained publishes forwarded without retain because `broker.max_retained_topics` is spent.
    retained_refused_total: counter;
    /// Vehicle publishes received (positions and statuses, before decoding).
    messages_received_total: counter;
    /// QoS 0 vehicle publishes dropped because the ingest queue was full.
    ingest_dropped_total: counter;
    /// Payloads decoded, by kind.
    messages_decoded_total_position: counter in "messages_decoded_total" {"kind=\"position\""};
    /// Payloads decoded, by kind.
    messages_decoded_total_status: counter in "messages_decoded_total" {"kind=\"status\""};
    /// Payloads that failed to decode (counted, logged rate-limited, never forwarded).
    messages_malformed_total: counter;
    /// JSON messages published to dashboards through the broker.
    messages_published_total: counter;
    /// Publishes to the broker dropped because its queue (`broker.publish_queue`) was full.
    broker_publish_dropped_total: counter;
    /// Vehicles in the fleet table (at most `fleet.max_vehicles`).
    fleet_vehicles: gauge;
    /// Messages of new vehicles refused because the table is full (policy `refuse_new`).
    fleet_vehicles_refused_total: counter;
    /// A vehicle inside more than `fleet::geofence::MAX_MEMBERSHIPS` fences
    /// at once: the one more is ignored.
    geofence_memberships_refused_total: counter;
    /// Events aged out of the `GET /events` ring (`events.ring`) to make
    /// room for newer ones (each went out through the fan-out first).
    events_ring_evicted_total: counter;
    /// Positions dropped as duplicates (same or older sequence number, seen before).
    positions_duplicate_total: counter;
    /// Positions that arrived after a newer one (forwarded, not the latest).
    positions_late_total: counter;
    /// Sequence numbers skipped by devices (gaps; a late arrival may fill one later).
    seq_gaps_total: counter;
    /// Fan-out subscribers (MQTT republisher, WebSockets, bridge feeder).
    fanout_subscribers: gauge;
    /// Subscriptions refused because `fanout.max_subscribers` was reached.
    fanout_subscribers_refused_total: counter;
    /// Updates a subscriber lost to its full queue (drop_oldest, drop_newest, conflate overflow).
    fanout_dropped_total: counter;
    /// Positions replaced in a conflating queue by a newer one for the same vehicle.
    fanout_conflated_total: counter;
    /// Times the producer waited for a `block` subscriber.
    fanout_blocked_total: counter;
    /// Open WebSocket connections on the live feed.
    ws_clients: gauge;
    /// WebSocket clients disconnected for not reading within `http.ws_stall_timeout_ms`.
    ws_stalled_disconnects_total: counter;
    /// WebSocket frames sent on the live feed.
    ws_frames_sent_total: counter;
    /// Open package-tracking sockets (`/packages/track/{vehicleId}`); their
    /// frames and stalls count in the `ws_` series.
    package_track_clients: gauge;
    /// 1 while the uplink to RabbitMQ is connected, else 0 (the bridge spools meanwhile).
    bridge_connected: gauge;
    /// Uplink sessions opened (connects; reconnects are this minus one).
    bridge_connects_total: counter;
    /// Uplink sessions lost.
    bridge_disconnects_total: counter;
    /// Moves of the uplink to the next node of `bridge.url` after one failed.
    bridge_failovers_total: counter;
    /// Records appended to the spool.
    bridge_records_spooled_total: counter;
    /// Records that could not be appended (a full or failing disk), dropped.
    bridge_spool_append_failed_total: counter;
    /// Positions not sent upstream because of `bridge.position_interval_ms`.
    bridge_positions_downsampled_total: counter;
    /// Messages published upstream (retries and probes included; held records are not sent).
    bridge_publishes_total: counter;
    /// Bytes of message bodies published upstream (retries included; AMQP
    /// framing and properties add about 140 bytes per message).
    bridge_published_body_bytes_total: counter;
    /// Passes over the spool's unconfirmed records to retry returned or nacked ones (at most one per `bridge.retry_failed_ms`).
    bridge_retry_passes_total: counter;
    /// Records RabbitMQ confirmed (then deleted from the spool).
    bridge_confirmed_total: counter;
    /// Messages RabbitMQ returned as unroutable (kept, retried).
    bridge_returns_total: counter;
    /// Unroutable records dropped after `bridge.unroutable_keep_s` (policy `retry_then_drop`).
    bridge_unroutable_dropped_total: counter;
    /// Probes sent: the oldest record of a routing key RabbitMQ returned, sent alone at a retry pass; the key's other records follow once one is routed.
    bridge_unroutable_probes_total: counter;
    /// Routing keys whose records are held in the spool behind a probe (at most `MAX_HELD_KEYS`, 16 384).
    bridge_unroutable_held_keys: gauge;
    /// Records held unsent in the spool behind their key's probe, counted by the last pass over the spool that reached its end.
    bridge_unroutable_held_records: gauge;
    /// Returns of a routing key past the held-key table's 16 384: its records are all re-sent at each retry (policy `resend_all`).
    bridge_unroutable_untracked_total: counter;
    /// Messages RabbitMQ nacked (kept, retried).
    bridge_nacks_total: counter;
    /// Bytes of the spool on disk.
    bridge_spool_bytes: gauge;
    /// Unconfirmed records in the spool.
    bridge_spool_records: gauge;
    /// Age of the oldest unconfirmed record, in ms (0 when empty).
    bridge_spool_oldest_age_ms: gauge;
    /// Records dropped by the full spool's policy (oldest positions first), by class.
    bridge_spool_dropped_total_position: counter in "bridge_spool_dropped_total" {"class=\"position\""};
    /// Records dropped by the full spool's policy (oldest positions first), by class.
    bridge_spool_dropped_total_status: counter in "bridge_spool_dropped_total" {"class=\"status\""};
    /// Records dropped by the full spool's policy (oldest positions first), by class.
    bridge_spool_dropped_total_event: counter in "bridge_spool_dropped_total" {"class=\"event\""};
    /// Records dropped by the full spool's policy (oldest positions first), by class.
    bridge_spool_dropped_total_package: counter in "bridge_spool_dropped_total" {"class=\"package\""};
    /// Bytes of torn or corrupt tail cut from the spool when it was opened.
    bridge_spool_recovered_cut_bytes: gauge;
    /// Records found unconfirmed in the spool at start and sent since, each once: what this run sent again of what the last one left (at most the confirm window of them had reached RabbitMQ before).
    bridge_spool_resent_after_recovery_total: counter;
    /// Commands from RabbitMQ handed to the broker for a device.
    bridge_commands_total: counter;
    /// Notifications from RabbitMQ handled.
    bridge_notifications_total: counter;
    /// Downlink messages rejected (bad JSON, bad vehicle id), not requeued.
    bridge_downlink_rejected_total: counter;
    /// Notifications handed to users' sockets (or mailboxes, on connect).
    notifications_delivered_total: counter;
    /// Notifications dropped: a full mailbox or socket queue, an evicted mailbox.
    notifications_dropped_total: counter;
    /// Open notification WebSockets.
    notification_clients: gauge;
    /// Commands delivered from the broker to vehicle connections at the edge.
    commands_delivered_total: counter;
    /// Commands dropped: vehicle not connected here, or its command queue full.
    commands_dropped_total: counter;
    /// SMQ messages dropped, by reason: `queue_full` (a queue at smq.mem_queue_size lost its oldest), `memory_full` (smq.max_bytes: the new message lost for that queue), `too_large` (an MQTT publish over smq.max_message_bytes), `no_topic` (forwarded for a topic just evicted).
    smq_dropped_total_queue_full: counter in "smq_dropped_total" {"reason=\"queue_full\""};
    /// SMQ messages dropped, by reason.
    smq_dropped_total_memory_full: counter in "smq_dropped_total" {"reason=\"memory_full\""};
    /// SMQ messages dropped, by reason.
    smq_dropped_total_too_large: counter in "smq_dropped_total" {"reason=\"too_large\""};
    /// SMQ messages dropped, by reason.
    smq_dropped_total_no_topic: counter in "smq_dropped_total" {"reason=\"no_topic\""};
    /// SMQ topics, channels, consumers or publishes refused at a bound, by reason (`busy`: the broker link's queue, smq.publish_queue).
    smq_refused_total_max_topics: counter in "smq_refused_total" {"reason=\"max_topics\""};
    /// SMQ refusals, by reason.
    smq_refused_total_max_filters: counter in "smq_refused_total" {"reason=\"max_filters\""};
    /// SMQ refusals, by reason.
    smq_refused_total_max_channels: counter in "smq_refused_total" {"reason=\"max_channels\""};
    /// SMQ refusals, by reason.
    smq_refused_total_max_consumers: counter in "smq_refused_total" {"reason=\"max_consumers\""};
    /// SMQ refusals, by reason.
    smq_refused_total_busy: counter in "smq_refused_total" {"reason=\"busy\""};
    /// SMQ refusals, by reason.
    smq_refused_total_auth_first: counter in "smq_refused_total" {"reason=\"auth_first\""};
    /// SMQ refusals, by reason.
    smq_refused_total_bad_credentials: counter in "smq_refused_total" {"reason=\"bad_credentials\""};
    /// SMQ refusals, by reason.
    smq_refused_total_not_authorized: counter in "smq_refused_total" {"reason=\"not_authorized\""};
    /// `/put`s queued for the broker.
    smq_put_total: counter;
    /// Messages the broker forwarded to SMQ topics (`/put`s and MQTT publishes).
    smq_received_total: counter;
    /// Messages handed to SMQ consumers (`GET`).
    smq_delivered_total: counter;
    /// Messages finished (`FIN`).
    smq_finished_total: counter;
    /// Messages put back in their channel, by reason: `req` (REQ), `timeout` (held past smq.msg_timeout_s), `disconnect` (its consumer left).
    smq_requeued_total_req: counter in "smq_requeued_total" {"reason=\"req\""};
    /// Messages put back in their channel, by reason.
    smq_requeued_total_timeout: counter in "smq_requeued_total" {"reason=\"timeout\""};
    /// Messages put back in their channel, by reason.
    smq_requeued_total_disconnect: counter in "smq_requeued_total" {"reason=\"disconnect\""};
    /// SMQ consumer connections closed by the gateway, by reason.
    smq_connections_closed_total_handshake_timeout: counter in "smq_connections_closed_total" {"reason=\"handshake_timeout\""};
    /// SMQ consumer connections closed by the gateway, by reason.
    smq_connections_closed_total_idle_timeout: counter in "smq_connections_closed_total" {"reason=\"idle_timeout\""};
    /// SMQ consumer connections closed by the gateway, by reason.
    smq_connections_closed_total_write_timeout: counter in "smq_connections_closed_total" {"reason=\"write_timeout\""};
    /// SMQ consumer connections closed by the gateway, by reason.
    smq_connections_closed_total_line_too_long: counter in "smq_connections_closed_total" {"reason=\"line_too_long\""};
    /// SMQ consumer connections open now.
    smq_consumers: gauge;
    /// Bytes the SMQ queues hold now (bodies and slots, at most smq.max_bytes).
    smq_queued_bytes: gauge;
    /// Pub/sub WebSockets (`/message`) open now.
    pubsub_connections: gauge;
    /// Filters the pub/sub connections hold now (a connection's each).
    pubsub_subscriptions: gauge;
    /// The pub/sub proxy's subscriptions in the broker (covers of the connections' filters).
    pubsub_link_filters: gauge;
    /// Frames waiting in pub/sub connections' queues now.
    pubsub_queued_frames: gauge;
    /// `/message` publishes queued for the broker.
    pubsub_published_total: counter;
    /// Publishes the broker forwarded to the pub/sub proxy.
    pubsub_received_total: counter;
    /// Frames sent to pub/sub WebSockets (publishes and error frames).
    pubsub_sent_total: counter;
    /// Pub/sub messages dropped, by reason: `queue_full` (a connection's queue at pubsub.queue lost its oldest), `too_large` (an MQTT publish over pubsub.max_message_bytes), `not_utf8` (an MQTT payload that is not UTF-8 text).
    pubsub_dropped_total_queue_full: counter in "pubsub_dropped_total" {"reason=\"queue_full\""};
    /// Pub/sub messages dropped, by reason.
    pubsub_dropped_total_too_large: counter in "pubsub_dropped_total" {"reason=\"too_large\""};
    /// Pub/sub messages dropped, by reason.
    pubsub_dropped_total_not_utf8: counter in "pubsub_dropped_total" {"reason=\"not_utf8\""};
    /// Pub/sub connections, subscriptions or publishes refused at a bound, by reason (`busy`: the broker link's queue, pubsub.publish_queue).
    pubsub_refused_total_max_connections: counter in "pubsub_refused_total" {"reason=\"max_connections\""};
    /// Pub/sub refusals, by reason.
    pubsub_refused_total_max_topics: counter in "pubsub_refused_total" {"reason=\"max_topics\""};
    /// Pub/sub refusals, by reason.
    pubsub_refused_total_max_filters: counter in "pubsub_refused_total" {"reason=\"max_filters\""};
    /// Pub/sub refusals, by reason.
    pubsub_refused_total_busy: counter in "pubsub_refused_total" {"reason=\"busy\""};
    /// Error frames sent to pub/sub clients (bad JSON, unknown action, a refused request).
    pubsub_errors_total: counter;
    /// Pub/sub WebSockets cut for not reading within http.ws_stall_timeout_ms.
    pubsub_stalled_total: counter;
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_series_share_one_family_header() {
        let m = Metrics::default();
        Metrics::inc(&m.connections_vehicle);
        let text = m.render();
        assert_eq!(
            text.matches("# TYPE fleetgate_connections gauge").count(),
            1
        );
        assert!(
            text.contains("fleetgate_connections{kind=\"vehicle\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("fleetgate_messages_malformed_total 0\n"));
    }
}
