//! Per-client message and byte rates, enforced by not reading (as EMQX
//! does): a client over its rate is not disconnected, it is slowed down to
//! it, and TCP's flow control pushes back on the sender.
//!
//! In: each packet a client sends (its length; whether it is a PUBLISH).
//! Out: when the client's connection may be read again. Bound: one `u64`
//! per connection (GCRA's theoretical arrival time; no queue, no timer
//! unless the client is over its rate).
//!
//! A packet costs `1 s / mqtt.max_messages_per_s_per_client` if it is a
//! PUBLISH, plus `its bytes / mqtt.max_bytes_per_s_per_client`; a client may
//! run ahead of its rate by `mqtt.rate_burst_ms`. The two costs add up, so a
//! client at both limits at once gets half of each: the simpler rule errs
//! on the side of the gateway. A vehicle is held back packet by packet; a
//! handed-off client, whose proxy reads up to 16 KiB at a time, one read at
//! a time: what one read brought in is forwarded, the next waits.

use crate::config::MqttConfig;

#[derive(Debug, Clone, Copy)]
pub struct ClientRate {
    /// µs a PUBLISH costs (0: no message limit).
    message_cost_us: u64,
    /// ns a byte costs (0: no byte limit).
    byte_cost_ns: u64,
    burst_us: u64,
}

impl ClientRate {
    pub fn new(mqtt: &MqttConfig) -> ClientRate {
        let per = |n: u32, unit: u64| if n == 0 { 0 } else { unit / u64::from(n) };
        ClientRate {
            message_cost_us: per(mqtt.max_messages_per_s_per_client, 1_000_000),
            byte_cost_ns: per(mqtt.max_bytes_per_s_per_client, 1_000_000_000),
            burst_us: mqtt.rate_burst_ms.saturating_mul(1000),
        }
    }

    pub fn is_limited(&self) -> bool {
        self.message_cost_us > 0 || self.byte_cost_ns > 0
    }

    /// Charges one packet to `tat_us` (the client's state) at `now_us`;
    /// `Some(t)`: do not read the client again before `t` (µs).
    pub fn charge(&self, tat_us: &mut u64, now_us: u64, len: usize, publish: bool) -> Option<u64> {
        if !self.is_limited() {
            return None;
        }
        let cost = if publish { self.message_cost_us } else { 0 }
            + (len as u64).saturating_mul(self.byte_cost_ns) / 1000;
        *tat_us = (*tat_us).max(now_us).saturating_add(cost);
        self.resume_at(*tat_us, now_us)
    }

    /// With the client at `tat_us`: `Some(t)` if it may not be read before
    /// `t`, `None` if it may be read now.
    pub fn resume_at(&self, tat_us: u64, now_us: u64) -> Option<u64> {
        let resume = tat_us.saturating_sub(self.burst_us);
        (resume > now_us).then_some(resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(msgs: u32, bytes: u32, burst_ms: u64) -> ClientRate {
        ClientRate::new(&MqttConfig {
            max_messages_per_s_per_client: msgs,
            max_bytes_per_s_per_client: bytes,
            rate_burst_ms: burst_ms,
            ..MqttConfig::default()
        })
    }

    #[test]
    fn a_burst_passes_then_the_client_waits_for_its_rate() {
        let r = rate(10, 0, 1000);
        let mut tat = 0;
        // 10/s with a 1 s burst: ten at once are fine, the eleventh waits.
        for _ in 0..10 {
            assert_eq!(r.charge(&mut tat, 0, 50, true), None);
        }
        assert_eq!(r.charge(&mut tat, 0, 50, true), Some(100_000));
        // Non-PUBLISH packets cost nothing without a byte limit.
        let mut tat = 0;
        for _ in 0..100 {
            assert_eq!(r.charge(&mut tat, 0, 2, false), None);
        }
    }

    #[test]
    fn bytes_are_charged_too_and_no_limit_is_free() {
        let r = rate(0, 1000, 0);
        let mut tat = 0;
        assert_eq!(r.charge(&mut tat, 0, 500, true), Some(500_000));
        let free = rate(0, 0, 0);
        assert!(!free.is_limited());
        assert_eq!(free.charge(&mut tat, 0, 1 << 20, true), None);
    }
}
