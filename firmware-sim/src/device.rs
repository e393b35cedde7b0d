//! The vehicle logic: what a telematics unit does between its GNSS receiver
//! and its modem, written once for real firmware (`no_std`, no allocator) and
//! for the simulated fleet.
//!
//! In: fixes (pulled from a [`FixSource`] on each [`Device::tick`], or pushed
//! with [`Device::report`]), the link state and publish results of an
//! [`Uplink`], and [`Command`]s from the gateway. Out: tagged postcard
//! payloads handed to the uplink (`Kind::Position`, `Kind::Status`), in
//! sequence order, with late ones flagged [`flags::REPLAYED`].
//!
//! Bound: one encode buffer of [`MAX_ENCODED_LEN`] bytes on the stack per
//! publish, one [`MAX_TEXT_LEN`]-byte text buffer, and an [`OfflineRing`]
//! whose capacity the caller fixes: `heapless::Deque<Position, N>` on a
//! device, [`BoundedRing`] (feature `std`) when the capacity is only known
//! at run time. While the link is down the ring keeps the NEWEST positions:
//! when it is full the oldest is dropped and counted
//! ([`Counters::dropped_oldest`]), because a dispatcher wants to know where
//! a vehicle is, not where it was an hour ago.

use fleetgate_wire::{
    decode, encode, flags, Command, Error as WireError, FirmwareVersion, Kind, Position, Status,
    MAX_ENCODED_LEN, MAX_TEXT_LEN,
};

/// Shortest report interval a [`Command::SetReportInterval`] can set: a
/// mistyped `0` must not turn a vehicle into a flood.
pub const MIN_REPORT_INTERVAL_MS: u32 = 100;

/// Where payloads go: an MQTT client, a modem's AT-command socket, a serial port.
pub trait Uplink {
    type Error;
    /// Sends one encoded payload of the given kind (the uplink picks the
    /// topic or framing). An error means "not sent": the device keeps the
    /// position for later.
    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), Self::Error>;
    /// Whether a publish has a chance now; when false the device buffers
    /// without trying.
    fn is_connected(&self) -> bool;
}

/// One reading of the GNSS receiver and vehicle bus, before the device gives
/// it a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fix {
    pub time_ms: u64,
    pub lat_e6: i32,
    pub lon_e6: i32,
    pub speed_cm_s: u16,
    /// 1/256 of a turn, 0 = north.
    pub heading: u8,
    pub fix_valid: bool,
    pub ignition: bool,
    pub odometer_m: u32,
}

/// Something that can be asked for the current fix.
pub trait FixSource {
    /// The fix at `now_ms`, or `None` when there is none (receiver cold,
    /// tunnel): the device then skips this report.
    fn sample(&mut self, now_ms: u64) -> Option<Fix>;
}

/// Storage for positions that could not be sent, oldest first.
pub trait OfflineRing {
    /// Appends `p` as the newest; when full, evicts and returns the oldest
    /// (or `p` itself if the capacity is zero).
    fn push_newest(&mut self, p: Position) -> Option<Position>;
    fn oldest(&self) -> Option<&Position>;
    fn pop_oldest(&mut self) -> Option<Position>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<const N: usize> OfflineRing for heapless::Deque<Position, N> {
    fn push_newest(&mut self, p: Position) -> Option<Position> {
        match self.push_back(p) {
            Ok(()) => None,
            Err(p) => match self.pop_front() {
                Some(oldest) => {
                    // Cannot fail: pop_front just made room.
                    let _ = self.push_back(p);
                    Some(oldest)
                }
                None => Some(p),
            },
        }
    }
    fn oldest(&self) -> Option<&Position> {
        self.front()
    }
    fn pop_oldest(&mut self) -> Option<Position> {
        self.pop_front()
    }
    fn len(&self) -> usize {
        heapless::Deque::len(self)
    }
}

/// An [`OfflineRing`] whose capacity is chosen at run time; it allocates
/// only as it fills, so a fleet of mostly-connected simulated vehicles costs
/// little memory.
#[cfg(feature = "std")]
#[derive(Debug, Clone)]
pub struct BoundedRing {
    items: std::collections::VecDeque<Position>,
    capacity: usize,
}

#[cfg(feature = "std")]
impl BoundedRing {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            items: std::collections::VecDeque::new(),
            capacity,
        }
    }
}

#[cfg(feature = "std")]
impl OfflineRing for BoundedRing {
    fn push_newest(&mut self, p: Position) -> Option<Position> {
        if self.capacity == 0 {
            return Some(p);
        }
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(p);
        evicted
    }
    fn oldest(&self) -> Option<&Position> {
        self.items.front()
    }
    fn pop_oldest(&mut self) -> Option<Position> {
        self.items.pop_front()
    }
    fn len(&self) -> usize {
        self.items.len()
    }
}

/// How a device behaves; the defaults suit a delivery van.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Time between position reports.
    pub report_interval_ms: u32,
    /// Send the odometer with every n-th position (0: never); it rarely
    /// changes much and costs up to 5 bytes.
    pub odometer_every: u32,
    pub firmware: FirmwareVersion,
    /// Supply voltage reported in status messages.
    pub supply_mv: u16,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            report_interval_ms: 5_000,
            odometer_every: 10,
            firmware: FirmwareVersion {
                major: 0,
                minor: 1,
                patch: 0,
            },
            supply_mv: 12_600,
        }
    }
}

/// What the device did, for logs, tests and the runner's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Positions created (each got a sequence number).
    pub produced: u64,
    /// Positions the uplink accepted on their first try.
    pub sent: u64,
    /// Positions put into the offline ring.
    pub buffered: u64,
    /// Buffered positions sent later, flagged REPLAYED.
    pub replayed: u64,
    /// Buffered positions evicted by newer ones while offline.
    pub dropped_oldest: u64,
    /// Publishes the uplink refused while it claimed to be connected.
    pub publish_errors: u64,
    /// Commands handled.
    pub commands: u64,
    /// Command payloads that did not decode.
    pub bad_commands: u64,
    /// Text messages received.
    pub texts: u64,
}

/// Where a position went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Kept in the offline ring for later.
    Buffered,
}

/// One vehicle's telematics unit. `R` is its offline ring.
#[derive(Debug, Clone)]
pub struct Device<R: OfflineRing> {
    config: DeviceConfig,
    next_seq: u32,
    interval_ms: u32,
    /// When the next report is due; `None` means now.
    next_due_ms: Option<u64>,
    ring: R,
    counters: Counters,
    last_text: heapless::String<MAX_TEXT_LEN>,
}

impl<R: OfflineRing> Device<R> {
    pub fn new(config: DeviceConfig, ring: R) -> Self {
        Self {
            config,
            // Start at 1: 0 is what a hand-typed JSON position gets.
            next_seq: 1,
            interval_ms: config.report_interval_ms.max(MIN_REPORT_INTERVAL_MS),
            next_due_ms: None,
            ring,
            counters: Counters::default(),
            last_text: heapless::String::new(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn report_interval_ms(&self) -> u32 {
        self.interval_ms
    }
    /// The last text message from the gateway.
    pub fn last_text(&self) -> &str {
        &self.last_text
    }
    /// Positions waiting in the offline ring.
    pub fn buffered_len(&self) -> usize {
        self.ring.len()
    }
    /// When the next report is due (ms since the epoch); `None` means now.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms
    }
    pub fn is_due(&self, now_ms: u64) -> bool {
        self.next_due_ms.is_none_or(|due| now_ms >= due)
    }

    /// Reports a position if one is due: samples `source`, then as [`Device::report`].
    /// Returns `None` when nothing was due or the source had no fix.
    pub fn tick<S: FixSource, U: Uplink>(
        &mut self,
        now_ms: u64,
        source: &mut S,
        uplink: &mut U,
    ) -> Option<Delivery> {
        if !self.is_due(now_ms) {
            return None;
        }
        // Schedule from now, not from the previous due time: after a long
        // stall, one report, not a burst of catch-up reports.
        self.next_due_ms = Some(now_ms.saturating_add(u64::from(self.interval_ms)));
        let fix = source.sample(now_ms)?;
        Some(self.report(&fix, uplink))
    }

    /// Gives `fix` the next sequence number and sends it, after any buffered
    /// positions (so the gateway sees them in order); buffers it when the
    /// link is down or the publish fails.
    pub fn report<U: Uplink>(&mut self, fix: &Fix, uplink: &mut U) -> Delivery {
        let position = self.position_from(fix);
        self.counters.produced += 1;
        if uplink.is_connected() {
            self.flush(uplink);
            if self.ring.is_empty() {
                match publish_message(uplink, &position) {
                    Ok(()) => {
                        self.counters.sent += 1;
                        return Delivery::Sent;
                    }
                    Err(_) => self.counters.publish_errors += 1,
                }
            }
        }
        self.buffer(position);
        Delivery::Buffered
    }

    /// Sends buffered positions, oldest first, flagged REPLAYED, until the
    /// ring is empty or a publish fails (the failed one stays first in line).
    /// Call it when the link comes back; [`Device::report`] also calls it.
    /// Returns how many were sent.
    pub fn flush<U: Uplink>(&mut self, uplink: &mut U) -> usize {
        let mut sent = 0;
        while uplink.is_connected() {
            let Some(oldest) = self.ring.oldest() else {
                break;
            };
            let mut late = *oldest;
            late.flags |= flags::REPLAYED;
            if publish_message(uplink, &late).is_err() {
                self.counters.publish_errors += 1;
                break;
            }
            self.ring.pop_oldest();
            self.counters.replayed += 1;
            sent += 1;
        }
        sent
    }

    /// Applies a command from the gateway.
    pub fn handle_command(&mut self, command: &Command) {
        self.counters.commands += 1;
        match command {
            Command::SetReportInterval { interval_ms } => {
                let new_interval = (*interval_ms).max(MIN_REPORT_INTERVAL_MS);
                // Bring the next report forward if the new interval is shorter,
                // so "report every second" takes effect now, not after the old 5 minutes.
                if let Some(due) = self.next_due_ms {
                    let earlier = due
                        .saturating_sub(u64::from(self.interval_ms.saturating_sub(new_interval)));
                    self.next_due_ms = Some(earlier);
                }
                self.interval_ms = new_interval;
            }
            Command::RequestPosition => self.next_due_ms = None,
            Command::Text(text) => {
                self.counters.texts += 1;
                self.last_text.clone_from(text);
            }
        }
    }

    /// Decodes and applies a command payload (postcard); a bad one is
    /// counted and returned as an error, never acted on.
    pub fn handle_command_payload(&mut self, payload: &[u8]) -> Result<(), WireError> {
        match decode::<Command>(payload) {
            Ok(command) => {
                self.handle_command(&command);
                Ok(())
            }
            Err(e) => {
                self.counters.bad_commands += 1;
                Err(e)
            }
        }
    }

    /// The status this device announces on connecting.
    pub fn online_status(&self, now_ms: u64, ignition: bool) -> Status {
        Status {
            time_ms: now_ms,
            online: true,
            ignition,
            supply_mv: self.config.supply_mv,
            firmware: self.config.firmware,
        }
    }

    /// The status the broker publishes for this device when its link dies
    /// (MQTT last will): no clock, so `time_ms` 0 ("the receiver's time").
    pub fn last_will(&self) -> Status {
        Status {
            time_ms: 0,
            online: false,
            ignition: false,
            supply_mv: 0,
            firmware: self.config.firmware,
        }
    }

    /// Sends a status message now (not buffered: a stale status is useless).
    pub fn publish_status<U: Uplink>(
        &mut self,
        status: &Status,
        uplink: &mut U,
    ) -> Result<(), PublishError<U::Error>> {
        publish_message(uplink, status)
    }

    fn position_from(&mut self, fix: &Fix) -> Position {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut bits = 0;
        if fix.fix_valid {
            bits |= flags::FIX_VALID;
        }
        if fix.ignition {
            bits |= flags::IGNITION;
        }
        let with_odometer =
            self.config.odometer_every != 0 && seq.is_multiple_of(self.config.odometer_every);
        Position {
            seq,
            time_ms: fix.time_ms,
            lat_e6: fix.lat_e6,
            lon_e6: fix.lon_e6,
            speed_cm_s: fix.speed_cm_s,
            heading: fix.heading,
            flags: bits,
            odometer_m: with_odometer.then_some(fix.odometer_m),
        }
    }

    fn buffer(&mut self, position: Position) {
        self.counters.buffered += 1;
        if self.ring.push_newest(position).is_some() {
            self.counters.dropped_oldest += 1;
        }
    }
}

/// Why a message did not reach the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError<E> {
    /// Cannot happen for our messages with a [`MAX_ENCODED_LEN`] buffer;
    /// kept as an error rather than a panic all the same.
    Encode(WireError),
    Uplink(E),
}

fn publish_message<U: Uplink, M: fleetgate_wire::WireMessage>(
    uplink: &mut U,
    msg: &M,
) -> Result<(), PublishError<U::Error>> {
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let payload = encode(msg, &mut buf).map_err(PublishError::Encode)?;
    uplink
        .publish(M::KIND, payload)
        .map_err(PublishError::Uplink)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what was published; can be taken down or made to refuse.
    #[derive(Default)]
    struct RecordingUplink {
        connected: bool,
        refuse_after: Option<usize>,
        positions: std::vec::Vec<Position>,
        statuses: std::vec::Vec<Status>,
    }

    impl Uplink for RecordingUplink {
        type Error = ();
        fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
            if self.refuse_after.is_some_and(|n| self.positions.len() >= n) {
                return Err(());
            }
            match kind {
                Kind::Position => self.positions.push(decode(payload).map_err(|_| ())?),
                Kind::Status => self.statuses.push(decode(payload).map_err(|_| ())?),
                Kind::Command => return Err(()),
            }
            Ok(())
        }
        fn is_connected(&self) -> bool {
            self.connected
        }
    }

    fn fix_at(t: u64) -> Fix {
        Fix {
            time_ms: t,
            lat_e6: 52_373_100,
            lon_e6: 4_892_200,
            speed_cm_s: 1000,
            heading: 10,
            fix_valid: true,
            ignition: true,
            odometer_m: 1234,
        }
    }

    /// Always has a fix; counts how often it was asked.
    struct Steady(u32);
    impl FixSource for Steady {
        fn sample(&mut self, now_ms: u64) -> Option<Fix> {
            self.0 += 1;
            Some(fix_at(now_ms))
        }
    }

    fn device<const N: usize>() -> Device<heapless::Deque<Position, N>> {
        Device::new(DeviceConfig::default(), heapless::Deque::new())
    }

    fn seqs(ps: &[Position]) -> std::vec::Vec<u32> {
        ps.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn connected_device_sends_in_sequence_with_flags_and_periodic_odometer() {
        let mut dev = device::<4>();
        let mut up = RecordingUplink {
            connected: true,
            ..Default::default()
        };
        for t in 0..20 {
            assert_eq!(dev.report(&fix_at(t), &mut up), Delivery::Sent);
        }
        assert_eq!(seqs(&up.positions), (1..=20).collect::<std::vec::Vec<_>>());
        let first = up.positions[0];
        assert_eq!(first.flags, flags::FIX_VALID | flags::IGNITION);
        assert_eq!(first.odometer_m, None);
        assert_eq!(
            up.positions[9].odometer_m,
            Some(1234),
            "every 10th carries the odometer"
        );
        assert_eq!(dev.counters().sent, 20);
    }

    #[test]
    fn ring_keeps_the_newest_in_order_and_counts_drops() {
        let mut dev = device::<3>();
        let mut up = RecordingUplink::default(); // down
        for t in 0..7 {
            assert_eq!(dev.report(&fix_at(t), &mut up), Delivery::Buffered);
        }
        assert!(up.positions.is_empty());
        assert_eq!(dev.buffered_len(), 3);
        assert_eq!(dev.counters().buffered, 7);
        assert_eq!(dev.counters().dropped_oldest, 4);
        up.connected = true;
        assert_eq!(dev.flush(&mut up), 3);
        assert_eq!(
            seqs(&up.positions),
            [5, 6, 7],
            "the newest three, oldest first"
        );
    }

    #[test]
    fn after_reconnect_replays_come_first_flagged_then_live_positions() {
        let mut dev = device::<8>();
        let mut up = RecordingUplink {
            connected: true,
            ..Default::default()
        };
        dev.report(&fix_at(0), &mut up);
        up.connected = false;
        dev.report(&fix_at(1), &mut up);
        dev.report(&fix_at(2), &mut up);
        up.connected = true;
        // No explicit flush: the next report flushes first.
        assert_eq!(dev.report(&fix_at(3), &mut up), Delivery::Sent);
        assert_eq!(seqs(&up.positions), [1, 2, 3, 4]);
        let replayed: std::vec::Vec<bool> = up
            .positions
            .iter()
            .map(|p| p.flags & flags::REPLAYED != 0)
            .collect();
        assert_eq!(replayed, [false, true, true, false]);
        assert_eq!(dev.counters().replayed, 2);
        assert_eq!(dev.buffered_len(), 0);
    }

    #[test]
    fn a_failed_publish_keeps_the_position_and_the_order() {
        let mut dev = device::<8>();
        let mut up = RecordingUplink {
            connected: true,
            refuse_after: Some(1),
            ..Default::default()
        };
        assert_eq!(dev.report(&fix_at(0), &mut up), Delivery::Sent);
        assert_eq!(dev.report(&fix_at(1), &mut up), Delivery::Buffered);
        assert_eq!(dev.report(&fix_at(2), &mut up), Delivery::Buffered);
        assert_eq!(dev.counters().publish_errors, 2);
        up.refuse_after = Some(2); // one more gets through, then refusals again
        dev.flush(&mut up);
        assert_eq!(seqs(&up.positions), [1, 2]);
        assert_eq!(dev.buffered_len(), 1, "the refused one stays first in line");
        up.refuse_after = None;
        dev.report(&fix_at(3), &mut up);
        assert_eq!(seqs(&up.positions), [1, 2, 3, 4]);
    }

    #[cfg(feature = "std")]
    #[test]
    fn zero_capacity_ring_drops_everything_while_offline() {
        // heapless refuses a zero-capacity Deque at compile time; BoundedRing allows it.
        let mut dev = Device::new(DeviceConfig::default(), BoundedRing::with_capacity(0));
        let mut up = RecordingUplink::default();
        dev.report(&fix_at(0), &mut up);
        assert_eq!(dev.counters().dropped_oldest, 1);
        assert_eq!(dev.buffered_len(), 0);
    }

    #[test]
    fn tick_respects_the_interval_and_commands_change_it() {
        let mut dev = device::<4>();
        let mut up = RecordingUplink {
            connected: true,
            ..Default::default()
        };
        let mut gps = Steady(0);
        assert!(
            dev.tick(0, &mut gps, &mut up).is_some(),
            "the first tick reports"
        );
        assert!(dev.tick(4_999, &mut gps, &mut up).is_none());
        assert!(dev.tick(5_000, &mut gps, &mut up).is_some());
        assert_eq!(gps.0, 2, "the receiver is only asked when a report is due");

        dev.handle_command(&Command::SetReportInterval { interval_ms: 1_000 });
        assert_eq!(dev.report_interval_ms(), 1_000);
        assert!(
            dev.tick(6_000, &mut gps, &mut up).is_some(),
            "a shorter interval applies at once"
        );
        assert!(dev.tick(6_500, &mut gps, &mut up).is_none());

        dev.handle_command(&Command::RequestPosition);
        assert!(
            dev.tick(6_501, &mut gps, &mut up).is_some(),
            "requested: report now"
        );
        assert!(
            dev.tick(6_502, &mut gps, &mut up).is_none(),
            "and only once"
        );

        dev.handle_command(&Command::SetReportInterval { interval_ms: 0 });
        assert_eq!(dev.report_interval_ms(), MIN_REPORT_INTERVAL_MS);
    }

    #[test]
    fn text_commands_are_stored_and_bad_payloads_counted() {
        let mut dev = device::<4>();
        let mut buf = [0u8; MAX_ENCODED_LEN];
        let text =
            Command::Text(heapless::String::try_from("Pick up at Dam 1").unwrap_or_default());
        let payload = encode(&text, &mut buf).unwrap_or_default();
        assert_eq!(dev.handle_command_payload(payload), Ok(()));
        assert_eq!(dev.last_text(), "Pick up at Dam 1");
        assert_eq!(dev.counters().texts, 1);
        assert!(dev.handle_command_payload(&[0x13, 0x09]).is_err());
        assert!(dev.handle_command_payload(b"{}").is_err());
        assert_eq!(dev.counters().bad_commands, 2);
        assert_eq!(dev.counters().commands, 1);
    }

    #[test]
    fn statuses_and_last_will() {
        let mut dev = device::<4>();
        let mut up = RecordingUplink {
            connected: true,
            ..Default::default()
        };
        let online = dev.online_status(99, true);
        assert_eq!(dev.publish_status(&online, &mut up), Ok(()));
        assert_eq!(up.statuses, [online]);
        assert!(online.online && online.ignition);
        let will = dev.last_will();
        assert!(!will.online);
        assert_eq!(will.time_ms, 0);
    }

    #[cfg(feature = "std")]
    #[test]
    fn bounded_ring_behaves_like_the_heapless_one() {
        let mut dev = Device::new(DeviceConfig::default(), BoundedRing::with_capacity(3));
        let mut up = RecordingUplink::default();
        for t in 0..7 {
            dev.report(&fix_at(t), &mut up);
        }
        assert_eq!(dev.counters().dropped_oldest, 4);
        up.connected = true;
        dev.flush(&mut up);
        assert_eq!(seqs(&up.positions), [5, 6, 7]);
    }
}
