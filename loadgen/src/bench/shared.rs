//! The state a bench run's tasks share: the phase the publishers follow,
//! and per-step counters that publishers and subscribers add to.
//!
//! In: sends and arrivals, counted by the step their stamp belongs to. Out:
//! per-step sent/received/late counts, the step of a stamp, the first error
//! seen. Bound: one [`StepCounters`] per step slot (fixed at the start).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::{sleep, Instant};

/// What the publishers do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Phase {
    Paused,
    /// Step `step` at `rate` messages/s per publisher (0 = flat out).
    Run {
        step: usize,
        rate: f64,
    },
    Done,
}

#[derive(Default)]
pub(super) struct StepCounters {
    /// Unix ns when the step began (0: not yet).
    pub(super) start_ns: AtomicU64,
    pub(super) sent: AtomicU64,
    /// Each (message, reading subscriber) pair seen for the first time.
    pub(super) received: AtomicU64,
    /// Of those, arrivals later than the search's p99 limit.
    pub(super) late: AtomicU64,
}

pub(super) struct Shared {
    pub(super) steps: Vec<StepCounters>,
    /// The step now running (for the sampler and slow subscribers); usize::MAX before.
    pub(super) current_step: AtomicUsize,
    pub(super) publishers_connected: AtomicUsize,
    pub(super) publishers_lost: AtomicUsize,
    pub(super) subscribers_lost: AtomicUsize,
    pub(super) first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    /// The step a message sent at `sent_ns` belongs to.
    pub(super) fn step_of(&self, sent_ns: u64) -> usize {
        self.steps
            .iter()
            .rposition(|s| {
                let start = s.start_ns.load(Relaxed);
                start != 0 && start <= sent_ns
            })
            .unwrap_or(0)
    }
    /// Counters for `slots` steps (the warm-up is step 0).
    pub(super) fn new(slots: usize) -> Self {
        Shared {
            steps: (0..slots).map(|_| StepCounters::default()).collect(),
            current_step: AtomicUsize::new(usize::MAX),
            publishers_connected: AtomicUsize::new(0),
            publishers_lost: AtomicUsize::new(0),
            subscribers_lost: AtomicUsize::new(0),
            first_error: std::sync::Mutex::new(None),
        }
    }
    /// The first error noted, if any.
    pub(super) fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }
    pub(super) fn note_error(&self, e: impl std::fmt::Display) {
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Waits until every message sent in `steps` has reached each reader, or `limit`.
pub(super) async fn await_arrivals(
    shared: &Shared,
    steps: std::ops::Range<usize>,
    copies: u64,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let missing = shared.steps[steps.clone()]
            .iter()
            .any(|s| s.received.load(Relaxed) < s.sent.load(Relaxed) * copies);
        if !missing || Instant::now() >= deadline {
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
}
