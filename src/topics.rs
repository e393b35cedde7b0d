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

use std::fmt;

/// A vehicle's id: 1 to 64 bytes of `[A-Za-z0-9._-]`, so it is safe in an
/// MQTT topic level, an AMQP routing key and a URL path alike.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VehicleId(heapless::String<{ VehicleId::MAX_LEN }>);

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
    fn vehicle_id_rejects_topic_and_key_metacharacters() {
        for bad in ["a/b", "a+b", "a#", "a b", "", &"x".repeat(65)] {
            assert!(VehicleId::parse(bad).is_none(), "{bad:?}");
        }
        assert!(VehicleId::parse("TRUCK_7.a-b").is_some());
    }
}
