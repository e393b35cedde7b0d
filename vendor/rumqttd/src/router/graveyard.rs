use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::{
    scheduler::{PauseReason, Tracker},
    ConnectionEvents,
};

/// Saved state of disconnected persistent sessions.
///
/// fleetgate patch 2: only persistent sessions are saved (a clean session's
/// state is dropped at disconnect), and at most `max` of them: saving one
/// more evicts the session disconnected longest ago ("oldest disconnect
/// first"), which `save_state` hands back so the router can release it.
pub struct Graveyard {
    connections: HashMap<String, SavedState>,
    /// fleetgate patch 2: client ids by order of disconnection
    order: BTreeMap<u64, String>,
    next_seq: u64,
    max: Option<usize>,
}

impl Graveyard {
    pub fn new(max: Option<usize>) -> Graveyard {
        Graveyard {
            connections: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            max,
        }
    }

    /// Add a new connection.
    /// Return tracker of previous connection if connection id already exists
    pub fn retrieve(&mut self, id: &str) -> Option<SavedState> {
        let saved = self.connections.remove(id)?;
        self.order.remove(&saved.seq);
        Some(saved)
    }

    /// fleetgate patch 2 (tests): number of saved sessions
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// fleetgate patch 1 (tests): every saved state
    #[cfg(test)]
    pub fn saved(&self) -> impl Iterator<Item = (&String, &SavedState)> {
        self.connections.iter()
    }

    /// fleetgate patch 1: look at a saved state without taking it
    pub fn get(&self, id: &str) -> Option<&SavedState> {
        self.connections.get(id)
    }

    /// Save connection tracker. fleetgate patch 2: returns the sessions
    /// evicted to stay within `max` (oldest disconnect first), with their ids.
    pub fn save_state(
        &mut self,
        mut tracker: Tracker,
        subscriptions: HashSet<String>,
        metrics: ConnectionEvents,
        unacked_pubrels: VecDeque<u16>,
    ) -> Vec<(String, SavedState)> {
        tracker.pause(PauseReason::Busy);
        let id = tracker.id.clone();

        let session_state = SessionState {
            tracker,
            subscriptions,
            unacked_pubrels,
        };

        let mut evicted: Vec<(String, SavedState)> = self
            .retrieve(&id)
            .map(|s| (id.clone(), s))
            .into_iter()
            .collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        self.connections.insert(
            id,
            SavedState {
                session_state: Some(session_state),
                metrics,
                seq,
            },
        );

        while self.max.is_some_and(|max| self.connections.len() > max) {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(saved) = self.connections.remove(&oldest) {
                evicted.push((oldest, saved));
            }
        }
        evicted
    }
}

#[derive(Debug)]
pub struct SavedState {
    pub session_state: Option<SessionState>,
    pub metrics: ConnectionEvents,
    /// fleetgate patch 2: disconnection order, for eviction
    seq: u64,
}

#[derive(Debug)]
pub struct SessionState {
    pub tracker: Tracker,
    pub subscriptions: HashSet<String>,
    // used for pubrel in qos2
    pub unacked_pubrels: VecDeque<u16>,
}
