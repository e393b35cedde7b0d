//! Per-user notifications: RabbitMQ → every WebSocket the user opened.
//!
//! In: notifications for a user id (from the bridge's downlink). Out: the
//! content as a text frame to each of the user's open sockets
//! (`GET /notification?userId=…`), or into the user's mailbox while none is
//! open, delivered on connect.
//!
//! Bound: `bridge.max_mailboxes` users with a mailbox, each holding at most
//! `bridge.mailbox_per_user` notifications of at most
//! [`MAX_NOTIFICATION_BYTES`] (policy `drop_oldest`: a user
//! who was away gets the newest ones); each open socket has a queue of the
//! same size (a socket that does not keep up loses the oldest, like the
//! mailbox). A new user past `max_mailboxes` evicts the mailbox idle the
//! longest that has no open socket. Every drop is counted in
//! `notifications_dropped_total`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Longest notification content kept; a longer one is rejected by the
/// downlink (and counted), so every mailbox entry is bounded.
pub const MAX_NOTIFICATION_BYTES: usize = 4096;

pub struct Mailboxes {
    users: Mutex<HashMap<String, Mailbox>>,
    per_user: usize,
    max_users: usize,
    metrics: Arc<Metrics>,
}

struct Mailbox {
    pending: VecDeque<String>,
    sockets: Vec<mpsc::Sender<String>>,
    last_active: Instant,
}

/// One open socket's feed: what waited in the mailbox, then what arrives.
pub struct UserFeed {
    pub pending: Vec<String>,
    pub live: mpsc::Receiver<String>,
}

impl Mailboxes {
    pub fn new(per_user: usize, max_users: usize, metrics: Arc<Metrics>) -> Arc<Mailboxes> {
        Arc::new(Mailboxes {
            users: Mutex::new(HashMap::new()),
            per_user: per_user.max(1),
            max_users: max_users.max(1),
            metrics,
        })
    }

    pub fn deliver(&self, user: &str, content: &str) {
        let mut users = self.users.lock();
        if !users.contains_key(user) && users.len() >= self.max_users {
            self.evict_idle(&mut users);
        }
        let per_user = self.per_user;
        let mailbox = users.entry(user.to_owned()).or_insert_with(|| Mailbox {
            pending: VecDeque::with_capacity(per_user.min(16)),
            sockets: Vec::new(),
            last_active: Instant::now(),
        });
        mailbox.last_active = Instant::now();
        mailbox.sockets.retain(|s| !s.is_closed());
        if mailbox.sockets.is_empty() {
            if mailbox.pending.len() >= per_user {
                mailbox.pending.pop_front();
                Metrics::inc(&self.metrics.notifications_dropped_total);
            }
            mailbox.pending.push_back(content.to_owned());
            return;
        }
        for socket in &mailbox.sockets {
            if socket.try_send(content.to_owned()).is_err() {
                Metrics::inc(&self.metrics.notifications_dropped_total);
            }
        }
        Metrics::inc(&self.metrics.notifications_delivered_total);
    }

    fn evict_idle(&self, users: &mut HashMap<String, Mailbox>) {
        let idle = users
            .iter()
            .filter(|(_, m)| m.sockets.iter().all(|s| s.is_closed()))
            .min_by_key(|(_, m)| m.last_active)
            .map(|(u, _)| u.clone());
        if let Some(user) = idle {
            if let Some(m) = users.remove(&user) {
                self.metrics
                    .notifications_dropped_total
                    .fetch_add(m.pending.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A socket opened for `user`: it gets what waited, then live content.
    pub fn connect(&self, user: &str) -> UserFeed {
        let (tx, live) = mpsc::channel(self.per_user);
        let mut users = self.users.lock();
        if !users.contains_key(user) && users.len() >= self.max_users {
            self.evict_idle(&mut users);
        }
        let mailbox = users.entry(user.to_owned()).or_insert_with(|| Mailbox {
            pending: VecDeque::new(),
            sockets: Vec::new(),
            last_active: Instant::now(),
        });
        mailbox.sockets.retain(|s| !s.is_closed());
        mailbox.sockets.push(tx);
        mailbox.last_active = Instant::now();
        let pending: Vec<String> = mailbox.pending.drain(..).collect();
        if !pending.is_empty() {
            Metrics::inc(&self.metrics.notifications_delivered_total);
        }
        UserFeed { pending, live }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(per_user: usize, max_users: usize) -> (Arc<Mailboxes>, Arc<Metrics>) {
        let m = Arc::new(Metrics::default());
        (Mailboxes::new(per_user, max_users, m.clone()), m)
    }

    #[tokio::test]
    async fn absent_users_get_the_newest_on_connect() {
        let (b, m) = boxes(2, 8);
        for n in ["1", "2", "3"] {
            b.deliver("ana", n);
        }
        let feed = b.connect("ana");
        assert_eq!(feed.pending, vec!["2", "3"]);
        assert_eq!(Metrics::get(&m.notifications_dropped_total), 1);
    }

    #[tokio::test]
    async fn every_open_socket_of_the_user_gets_it() {
        let (b, _) = boxes(4, 8);
        let mut one = b.connect("ana");
        let mut two = b.connect("ana");
        let mut other = b.connect("bob");
        b.deliver("ana", "hi");
        assert_eq!(one.live.recv().await.as_deref(), Some("hi"));
        assert_eq!(two.live.recv().await.as_deref(), Some("hi"));
        assert!(other.live.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn past_max_users_the_longest_idle_mailbox_goes() {
        let (b, m) = boxes(4, 2);
        b.deliver("a", "x");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        b.deliver("b", "y");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        b.deliver("c", "z");
        assert_eq!(
            Metrics::get(&m.notifications_dropped_total),
            1,
            "a's mailbox went"
        );
        assert_eq!(b.connect("b").pending, vec!["y"]);
        assert_eq!(b.connect("c").pending, vec!["z"]);
    }
}
