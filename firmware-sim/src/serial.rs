//! An [`Uplink`] over a byte stream: each payload becomes one COBS frame
//! (see `fleetgate_wire::frame`) on any [`embedded_io::Write`], e.g. a UART
//! to a modem or a gateway's serial port.
//!
//! In: tagged payloads from a [`crate::Device`]. Out: `COBS(payload) 0x00` on
//! the writer. Bound: no buffer of its own; the frame is streamed block by
//! block. The link state is whatever the owner last set with
//! [`SerialUplink::set_connected`] (a UART has no handshake of its own).

use fleetgate_wire::frame::write_payload_frame;
use fleetgate_wire::Kind;

use crate::device::Uplink;

#[derive(Debug)]
pub struct SerialUplink<W> {
    writer: W,
    connected: bool,
}

impl<W: embedded_io::Write> SerialUplink<W> {
    /// A link that starts connected.
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            connected: true,
        }
    }
    /// Marks the link up or down (e.g. from a modem's carrier-detect line).
    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }
    pub fn writer(&self) -> &W {
        &self.writer
    }
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl<W: embedded_io::Write> Uplink for SerialUplink<W> {
    type Error = W::Error;

    /// The kind is already in the payload's tag byte, so the frame needs no header.
    fn publish(&mut self, _kind: Kind, payload: &[u8]) -> Result<(), W::Error> {
        write_payload_frame(&mut self.writer, payload)
    }

    fn is_connected(&self) -> bool {
        self.connected
    }
}

// embedded-io implements Write for Vec only with its std feature.
#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::device::{Device, DeviceConfig, Fix};
    use fleetgate_wire::frame::{FeedResult, FrameAccumulator};
    use fleetgate_wire::{decode, Position, MAX_ENCODED_LEN};

    #[test]
    fn a_device_on_a_serial_link_writes_decodable_frames() {
        let mut device: Device<heapless::Deque<Position, 4>> =
            Device::new(DeviceConfig::default(), heapless::Deque::new());
        let mut link = SerialUplink::new(std::vec::Vec::new());
        let fix = Fix {
            time_ms: 1,
            lat_e6: 52_000_000,
            lon_e6: 4_000_000,
            speed_cm_s: 0,
            heading: 0,
            fix_valid: true,
            ignition: false,
            odometer_m: 0,
        };
        link.set_connected(false);
        device.report(&fix, &mut link);
        link.set_connected(true);
        device.report(&fix, &mut link);
        let bytes = link.into_inner();
        let mut acc = FrameAccumulator::<MAX_ENCODED_LEN>::new();
        let mut seqs = std::vec::Vec::new();
        let mut window = bytes.as_slice();
        while let FeedResult::Frame { payload, remaining } = acc.feed(window) {
            let p: Position = decode(payload).unwrap_or_else(|e| panic!("{e}"));
            seqs.push(p.seq);
            window = remaining;
        }
        assert_eq!(seqs, [1, 2]);
    }
}
