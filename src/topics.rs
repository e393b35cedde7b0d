//! The topic scheme, in one place.
//!
//! In: MQTT topic names and filters. Out: typed [`VehicleTopic`]s and the
//! names the gateway publishes under. Bound: a [`VehicleId`] is at most
//! [`VehicleId::MAX_LEN`] bytes, stored inline (no heap), so copying one on
//! the hot path costs a memcpy.
//!
//! | topic | who publishes | payload |
//! |---|---|---|
//! | `v/<vid>/pos` | device | postcard `Position` or its JSON form |
//! | `v/<vid>/status` | device (also its last will) | postcard `Status` or JSON |
//! | `v/<vid>/cmd` | anyone → device | postcard `Command` |
//! | `fleet/<vid>/position`, `fleet/<vid>/status` | gateway | JSON |
//! | `fleet/events/<kind>` | gateway | JSON; `<kind>` is never `position` or `status` |
//! | `fleet/events/package` | gateway | JSON: a package's change |
//!
//! Upstream, the AMQP routing keys mirror the dashboard topics with dots
//! (`fleet.<vid>.position`, `fleet.<vid>.status`, `fleet.events.<kind>`), so
//! a central consumer using RabbitMQ's MQTT plugin sees the same names.
//! Every topic and key the gateway builds or parses is built or parsed here.

use std::fmt;

/// A vehicle's id: 1 to 64 bytes of `[A-Za-z0-9._-]`, so it is safe in an
/// MQTT topic level, an AMQP routing key and a URL path alike.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VehicleId(heapless::String<{ VehicleId::MAX_LEN }>);

impl serde::Serialize for VehicleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl VehicleId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Option<VehicleId> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return None;
        }
        heapless::String::try_from(s).ok().map(VehicleId)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for VehicleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for VehicleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What a device publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTopicKind {
    Position,
    Status,
}

/// A topic under `v/<vid>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VehicleTopic {
    /// `v/<vid>/pos` or `v/<vid>/status`: device → gateway.
    Uplink(VehicleId, DeviceTopicKind),
    /// `v/<vid>/cmd`: → device.
    Command(VehicleId),
}

impl VehicleTopic {
    /// Parses a topic name (no wildcards); `None` for anything outside the
    /// vehicle scheme.
    pub fn parse(topic: &str) -> Option<VehicleTopic> {
        let rest = topic.strip_prefix("v/")?;
        let (vid, leaf) = rest.split_once('/')?;
        let vid = VehicleId::parse(vid)?;
        match leaf {
            "pos" => Some(VehicleTopic::Uplink(vid, DeviceTopicKind::Position)),
            "status" => Some(VehicleTopic::Uplink(vid, DeviceTopicKind::Status)),
            "cmd" => Some(VehicleTopic::Command(vid)),
            _ => None,
        }
    }
}

/// `fleet/<vid>/position` or `fleet/<vid>/status`.
pub fn dashboard_topic(vid: &VehicleId, kind: DeviceTopicKind) -> String {
    match kind {
        DeviceTopicKind::Position => format!("fleet/{vid}/position"),
        DeviceTopicKind::Status => format!("fleet/{vid}/status"),
    }
}

/// `v/<vid>/pos` or `v/<vid>/status`: where a device's raw payload is
/// mirrored inside the broker, so `v/#` stays subscribable.
pub fn device_topic(vid: &VehicleId, kind: DeviceTopicKind) -> String {
    match kind {
        DeviceTopicKind::Position => format!("v/{vid}/pos"),
        DeviceTopicKind::Status => format!("v/{vid}/status"),
    }
}

/// The filter the gateway's own broker link subscribes to for the downlink.
pub const COMMAND_FILTER: &str = "v/+/cmd";

/// `v/<vid>/cmd`: where commands for a device are published.
pub fn command_topic(vid: impl fmt::Display) -> String {
    format!("v/{vid}/cmd")
}

/// `v/<vid>/cmd` → `<vid>`, for a forward the broker delivered (bytes, as
/// rumqttd hands them over).
pub fn command_vehicle(topic: &[u8]) -> Option<&str> {
    let topic = std::str::from_utf8(topic).ok()?;
    let rest = topic.strip_prefix("v/")?;
    let vid = rest.strip_suffix("/cmd")?;
    (!vid.is_empty() && !vid.contains('/')).then_some(vid)
}

/// `fleet/events/<kind>`: where dashboards receive events.
pub fn event_topic(kind: &str) -> String {
    format!("fleet/events/{kind}")
}

/// Where dashboards receive package changes.
pub const PACKAGE_EVENTS_TOPIC: &str = "fleet/events/package";

/// The event kind of dispatch transitions: `fleet/events/dispatch`
/// (dashboards), `fleet.events.dispatch` (upstream).
pub const DISPATCH_EVENT_KIND: &str = "dispatch";

/// `fleet.<vid>.position` or `fleet.<vid>.status`: the AMQP routing key of
/// a vehicle's update upstream.
pub fn upstream_key(vid: &VehicleId, kind: DeviceTopicKind) -> String {
    match kind {
        DeviceTopicKind::Position => format!("fleet.{vid}.position"),
        DeviceTopicKind::Status => format!("fleet.{vid}.status"),
    }
}

/// `fleet.events.<kind>`: the AMQP routing key of an event upstream.
pub fn upstream_event_key(kind: &str) -> String {
    format!("fleet.events.{kind}")
}

/// The filter matching every dashboard topic (`fleet/…`): what the
/// dashboard role may read without an ACL line.
pub const DASHBOARD_FILTER: &str = "fleet/#";

/// Topic names and filters that only the gateway itself may publish to:
/// dashboards trust `fleet/…` to come from decoded device data.
pub fn is_gateway_namespace(topic: &str) -> bool {
    topic == "fleet" || topic.starts_with("fleet/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vehicle_topics_parse() {
        let t = VehicleTopic::parse("v/truck-7/pos").unwrap();
        assert_eq!(
            t,
            VehicleTopic::Uplink(
                VehicleId::parse("truck-7").unwrap(),
                DeviceTopicKind::Position
            )
        );
        assert!(matches!(
            VehicleTopic::parse("v/truck-7/cmd"),
            Some(VehicleTopic::Command(_))
        ));
        assert_eq!(VehicleTopic::parse("v/+/pos"), None);
        assert_eq!(VehicleTopic::parse("v/truck-7/pos/extra"), None);
        assert_eq!(VehicleTopic::parse("fleet/truck-7/position"), None);
        assert_eq!(VehicleTopic::parse("v//pos"), None);
    }

    #[test]
    fn command_topic_names_one_vehicle() {
        assert_eq!(command_vehicle(b"v/truck-7/cmd"), Some("truck-7"));
        assert_eq!(command_vehicle(b"v//cmd"), None);
        assert_eq!(command_vehicle(b"v/a/b/cmd"), None);
        assert_eq!(command_vehicle(b"v/truck-7/pos"), None);
        assert_eq!(
            command_vehicle(command_topic("truck-7").as_bytes()),
            Some("truck-7")
        );
    }

    #[test]
    fn vehicle_id_rejects_topic_and_key_metacharacters() {
        for bad in ["a/b", "a+b", "a#", "a b", "", &"x".repeat(65)] {
            assert!(VehicleId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(VehicleId::parse("TRUCK_7.a-b").is_some());
    }
}
