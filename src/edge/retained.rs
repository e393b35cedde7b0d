//! The retained topics the edge has let into rumqttd, and who last
//! published each.
//!
//! In: every retained PUBLISH a handed-off client sends (after the ACL
//! allowed it). Out: whether its topic may be retained (rumqttd's retained
//! map has no limit of its own), and, for `auth.check_retain_source`, the
//! publisher of a retained message rumqttd delivers, so that a publisher
//! whose right to write the topic is gone no longer speaks through it
//! (Mosquitto's `check_retain_source`). Bound: at most
//! `broker.max_retained_topics` topics, each with its last publisher's
//! client id and user name when `auth.check_retain_source` is on; a new
//! topic past that is refused (its publish is forwarded unretained and
//! counted by the caller). Topics are never forgotten: rumqttd keeps them.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::auth::Principal;

pub struct RetainedTopics {
    /// Topic → its last retained publisher (`None` unless sources are kept).
    topics: Mutex<HashMap<Box<str>, Option<Principal>>>,
    capacity: usize,
    keep_sources: bool,
}

impl RetainedTopics {
    pub fn new(capacity: usize, keep_sources: bool) -> Self {
        RetainedTopics {
            topics: Mutex::new(HashMap::new()),
            capacity,
            keep_sources,
        }
    }

    /// May `topic` be retained? Always for one already admitted (its
    /// publisher is updated); a new one while there is room.
    pub fn admit(&self, topic: &str, publisher: &Principal) -> bool {
        let source = self.keep_sources.then(|| publisher.clone());
        let mut topics = self.topics.lock();
        if let Some(last) = topics.get_mut(topic) {
            *last = source;
            return true;
        }
        if topics.len() >= self.capacity {
            return false;
        }
        topics.insert(topic.into(), source);
        true
    }

    /// Who last published `topic` retained, when sources are kept.
    pub fn source(&self, topic: &str) -> Option<Principal> {
        self.topics.lock().get(topic).cloned().flatten()
    }

    /// Are publishers kept (`auth.check_retain_source`)?
    pub fn keeps_sources(&self) -> bool {
        self.keep_sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::user(name)
    }

    #[test]
    fn a_known_topic_is_always_admitted_and_a_new_one_only_with_room() {
        let topics = RetainedTopics::new(1, false);
        assert!(topics.admit("a", &user("x")));
        assert!(!topics.admit("b", &user("x")));
        assert!(topics.admit("a", &user("y")));
        assert_eq!(topics.source("a"), None, "sources are kept only when asked");
    }

    #[test]
    fn the_last_publisher_is_the_source() {
        let topics = RetainedTopics::new(4, true);
        topics.admit("a", &user("x"));
        topics.admit("a", &user("y"));
        assert_eq!(topics.source("a"), Some(user("y")));
        assert_eq!(topics.source("b"), None);
    }
}
