//! One subscriber's queue: FIFO for the dropping policies, a per-vehicle
//! slab for `conflate`.
//!
//! In: updates the publisher admitted for this subscriber. Out: everything
//! queued, drained at once, and the count lost since the last drain. Bound:
//! `capacity` updates (or, for `conflate`, `capacity` vehicles' latest plus
//! `fanout.events_queue` events and an index of 2 × `fleet.max_vehicles`
//! `u32`s), all allocated in [`Queue::new`].

use std::collections::VecDeque;

use super::WhenFull;
use crate::fleet::Update;
use crate::metrics::Metrics;

const NO_ENTRY: u32 = u32::MAX;

/// Positions and statuses conflate per vehicle: slot × 2 and slot × 2 + 1.
fn conflation_key(update: &Update) -> Option<usize> {
    let slot = update.slot()? as usize;
    Some(slot * 2 + usize::from(matches!(update, Update::Status(_))))
}

/// One subscriber's queue. FIFO policies use `fifo`; `conflate` keeps the
/// newest position and status per vehicle in `entries` (a slab of
/// `capacity`), indexed by vehicle slot, in arrival order in `order`, and
/// events in `fifo`.
pub(super) struct Queue {
    policy: WhenFull,
    fifo: VecDeque<Update>,
    fifo_capacity: usize,
    entries: Vec<Option<Update>>,
    free: Vec<u32>,
    order: VecDeque<u32>,
    /// 2 × max_vehicles: slot × 2 for positions, slot × 2 + 1 for statuses.
    by_key: Vec<u32>,
    pub(super) lagged: u64,
}

impl Queue {
    pub(super) fn new(
        policy: WhenFull,
        capacity: usize,
        max_vehicles: usize,
        events_capacity: usize,
    ) -> Queue {
        let conflate = policy == WhenFull::Conflate;
        let fifo_capacity = if conflate { events_capacity } else { capacity };
        Queue {
            policy,
            fifo: VecDeque::with_capacity(fifo_capacity),
            fifo_capacity,
            entries: if conflate {
                vec![None; capacity]
            } else {
                Vec::new()
            },
            free: if conflate {
                (0..capacity as u32).rev().collect()
            } else {
                Vec::new()
            },
            order: VecDeque::with_capacity(if conflate { capacity } else { 0 }),
            by_key: if conflate {
                vec![NO_ENTRY; max_vehicles * 2]
            } else {
                Vec::new()
            },
            lagged: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.fifo.len() + self.order.len()
    }

    pub(super) fn push(&mut self, update: &Update, metrics: &Metrics) {
        match self.policy {
            WhenFull::Conflate => match update {
                Update::Event(_) | Update::Package(_) | Update::Dispatch(_) => {
                    self.push_drop_oldest(update, metrics)
                }
                Update::Position(p) if p.late => {}
                Update::Position(_) | Update::Status(_) => self.conflate(update, metrics),
                // Never given to a dropping subscriber (the publisher skips it).
                Update::Checkpoint(_) => {}
            },
            WhenFull::DropOldest => self.push_drop_oldest(update, metrics),
            // `block` is handled by the publisher; this is only a fallback.
            WhenFull::DropNewest | WhenFull::Block => {
                if !self.try_push_fifo(update) {
                    self.lose(metrics);
                }
            }
        }
    }

    pub(super) fn try_push_fifo(&mut self, update: &Update) -> bool {
        if self.fifo.len() >= self.fifo_capacity {
            return false;
        }
        self.fifo.push_back(update.clone());
        true
    }

    fn push_drop_oldest(&mut self, update: &Update, metrics: &Metrics) {
        if self.fifo.len() >= self.fifo_capacity {
            self.fifo.pop_front();
            self.lose(metrics);
        }
        self.fifo.push_back(update.clone());
    }

    fn lose(&mut self, metrics: &Metrics) {
        self.lagged += 1;
        Metrics::inc(&metrics.fanout_dropped_total);
    }

    fn conflate(&mut self, update: &Update, metrics: &Metrics) {
        let Some(key) = conflation_key(update) else {
            return self.push_drop_oldest(update, metrics);
        };
        let Some(&at) = self.by_key.get(key) else {
            // A slot past max_vehicles cannot happen; never index out of bounds.
            return self.lose(metrics);
        };
        if at != NO_ENTRY {
            self.entries[at as usize] = Some(update.clone());
            Metrics::inc(&metrics.fanout_conflated_total);
            return;
        }
        let entry = match self.free.pop() {
            Some(e) => e,
            None => {
                // More distinct vehicles pending than the capacity: the
                // oldest pending one goes.
                let Some(oldest) = self.order.pop_front() else {
                    return self.lose(metrics);
                };
                if let Some(old) = self.entries[oldest as usize].take() {
                    self.unindex(&old);
                }
                self.lose(metrics);
                oldest
            }
        };
        self.entries[entry as usize] = Some(update.clone());
        self.by_key[key] = entry;
        self.order.push_back(entry);
    }

    fn unindex(&mut self, update: &Update) {
        if let Some(k) = conflation_key(update).and_then(|key| self.by_key.get_mut(key)) {
            *k = NO_ENTRY;
        }
    }

    pub(super) fn drain_into(&mut self, out: &mut Vec<Update>) -> u64 {
        while let Some(entry) = self.order.pop_front() {
            if let Some(update) = self.entries[entry as usize].take() {
                self.unindex(&update);
                out.push(update);
            }
            self.free.push(entry);
        }
        out.extend(self.fifo.drain(..));
        std::mem::take(&mut self.lagged)
    }
}
