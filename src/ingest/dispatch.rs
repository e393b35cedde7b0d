//! What a dispatch transition does besides the fan-out: the vehicle is told
//! (a `Command::Text` on `v/<vid>/cmd`, through the broker to its
//! connection, like any command), and the requester gets a notification
//! (`/notification?userId=requestor_<id>`, the seed's naming).
//!
//! In: the [`Update::Dispatch`]es of one ingest step. Out: at most one
//! command and one notification per transition. Bound: the broker's publish
//! queue and the notification mailboxes bound themselves (a full one drops,
//! counted there).

use std::fmt::Write as _;

use bytes::Bytes;
use fleetgate_wire::{encode, Command, MAX_ENCODED_LEN, MAX_TEXT_LEN};

use super::Pipeline;
use crate::fleet::dispatch::{RequestState, RequestView};
use crate::fleet::Update;
use crate::topics::command_topic;

/// The requester's mailbox for a request.
pub fn requester(id: u64) -> String {
    format!("requestor_{id}")
}

impl Pipeline {
    pub fn dispatch_effects(&self, updates: &[Update]) {
        for update in updates {
            let Update::Dispatch(d) = update else {
                continue;
            };
            let r = &d.request;
            if let Some(mailboxes) = &self.notify {
                if let Ok(content) = serde_json::to_string(r) {
                    mailboxes.deliver(&requester(r.request_id), &content);
                }
            }
            if let Some(text) = driver_text(r) {
                self.tell_vehicle(r, &text);
            }
        }
    }

    fn tell_vehicle(&self, r: &RequestView, text: &str) {
        let Some(vehicle) = &r.vehicle_id else {
            return;
        };
        let mut line = heapless::String::<MAX_TEXT_LEN>::new();
        for c in text.chars() {
            if line.push(c).is_err() {
                break;
            }
        }
        let mut buf = [0u8; MAX_ENCODED_LEN];
        if let Ok(bytes) = encode(&Command::Text(line), &mut buf) {
            self.mirror
                .publish(command_topic(vehicle), Bytes::copy_from_slice(bytes));
        }
    }
}

/// What the driver reads, for the transitions that concern a vehicle.
fn driver_text(r: &RequestView) -> Option<String> {
    let mut text = String::new();
    match r.state {
        RequestState::Assigned => {
            let _ = write!(
                text,
                "dispatch {}: pick up at {:.5},{:.5} ({:.0} m)",
                r.request_id,
                r.lat,
                r.lon,
                r.distance_m.unwrap_or(0.0)
            );
        }
        RequestState::Cancelled | RequestState::Released | RequestState::LeaseEnded
            if r.vehicle_id.is_some() =>
        {
            let _ = write!(
                text,
                "dispatch {}: {:?}, you are free",
                r.request_id, r.state
            );
        }
        _ => return None,
    }
    Some(text)
}
