//! What the bridge keeps in its spool: one AMQP publish, ready to send.
//!
//! In: fleet updates. Out: spool payloads (postcard) and, when sending, the
//! exchange, routing key, properties and body. Bound: a body is one JSON
//! view (a few hundred bytes).

use serde::{Deserialize, Serialize};

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The configured topic exchange (`amq.topic`), with `routing_key`.
    TopicExchange,
    /// The default exchange, routing key = the package queue's name.
    PackageQueue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkRecord {
    pub target: Target,
    /// `fleet.<vid>.position`, … (ignored for [`Target::PackageQueue`]).
    pub routing_key: String,
    /// Set for package records (the vehicle id, by contract) and events
    /// (`<gateway_id>-event-<event_id>`); otherwise the bridge derives
    /// `<gateway_id>-<spool id>`, stable across retries.
    pub message_id: Option<String>,
    pub timestamp_ms: u64,
    pub body: Vec<u8>,
}

impl UplinkRecord {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<UplinkRecord, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = UplinkRecord {
            target: Target::PackageQueue,
            routing_key: String::new(),
            message_id: Some("truck-1".into()),
            timestamp_ms: 1_795_000_000_000,
            body: br#"{"from":"a"}"#.to_vec(),
        };
        assert_eq!(UplinkRecord::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(UplinkRecord::decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
