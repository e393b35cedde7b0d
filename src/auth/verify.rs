//! Password verification off the async runtime, behind a small semaphore,
//! with a cache of recent successes.
//!
//! In: a user name, the password it came with, and the hash to check it
//! against: the user's own, or the password file's decoy when the user is
//! unknown ([`super::PasswordFile::decoy`]). Out: matched or not, or
//! [`Busy`] when no verification slot came free within
//! `auth.verify_timeout_ms`. Bound: at most `auth.max_concurrent_verifications`
//! hashes computed at once, each on tokio's blocking pool (a PBKDF2 with
//! 210 000 iterations is ~0.2 s of CPU: on the runtime it would stall every
//! connection); a cache of at most `auth.verified_cache_entries` successful
//! logins (user → a keyed 32-byte digest of its password), emptied when full
//! and on reload.
//!
//! # No timing oracle for user names
//!
//! An unknown user is verified too, against a decoy hash of the same cost
//! as the file's entries, through the same semaphore and blocking pool, and
//! then refused: answering it at once, while a known user costs a hash,
//! would tell an attacker which names exist. Neither path is served from
//! the cache unless the password is right, which the attacker does not know.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::passwd::PasswordHash;
use super::AuthConfig;
use crate::metrics::Metrics;

/// No verification slot came free in time (counted as
/// `connections_refused_total{reason="auth_busy"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

pub struct Verifier {
    slots: Arc<Semaphore>,
    timeout: Duration,
    verified: Mutex<HashMap<Box<str>, [u8; 32]>>,
    cache_entries: usize,
    /// Keys the cache's digests, so they are useless outside this process.
    cache_key: [u8; 32],
    metrics: Arc<Metrics>,
}

impl Verifier {
    pub fn new(config: &AuthConfig, metrics: Arc<Metrics>) -> Verifier {
        let mut cache_key = [0u8; 32];
        // Without randomness the cache still works; its digests are then
        // as guessable as unsalted SHA-256s, so say so.
        if let Err(e) = getrandom::fill(&mut cache_key) {
            tracing::warn!(error = %e, "no randomness for the login cache's key");
        }
        Verifier {
            slots: Arc::new(Semaphore::new(config.max_concurrent_verifications.get())),
            timeout: Duration::from_millis(config.verify_timeout_ms),
            verified: Mutex::new(HashMap::new()),
            cache_entries: config.verified_cache_entries,
            cache_key,
            metrics,
        }
    }

    /// Does `password` match `hash`, the hash of user `name`? From the cache
    /// of recent successes, else computed off the runtime.
    pub async fn verify(
        &self,
        name: &str,
        password: &[u8],
        hash: PasswordHash,
    ) -> Result<bool, Busy> {
        let digest = self.digest(name, password);
        if self.verified.lock().get(name) == Some(&digest) {
            Metrics::inc(&self.metrics.auth_cache_hits_total);
            return Ok(true);
        }
        let ok = self.compute(password, hash).await?;
        if ok && self.cache_entries > 0 {
            let mut verified = self.verified.lock();
            if verified.len() >= self.cache_entries {
                // Full: start again rather than track ages (logins are
                // re-verified, never refused, after this).
                verified.clear();
            }
            verified.insert(name.into(), digest);
        }
        Ok(ok)
    }

    /// For a user that is not in the file: the same work as [`verify`]
    /// (Self::verify) on a miss, against `decoy`, whose answer is always no.
    pub async fn verify_unknown(&self, password: &[u8], decoy: PasswordHash) -> Result<(), Busy> {
        // The decoy matches no password; its answer is not looked at so
        // that even a freak match refuses.
        self.compute(password, decoy).await.map(drop)
    }

    /// Empties the cache (on reload: a changed password must be verified).
    pub fn forget_all(&self) {
        self.verified.lock().clear();
    }

    /// One hash, on the blocking pool, holding a slot.
    async fn compute(&self, password: &[u8], hash: PasswordHash) -> Result<bool, Busy> {
        let permit =
            match tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    Metrics::inc(&self.metrics.connections_refused_total_auth_busy);
                    return Err(Busy);
                }
            };
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash.verify(&password)
        })
        .await
        .unwrap_or(false);
        Metrics::inc(&self.metrics.auth_verifications_total);
        Ok(ok)
    }

    fn digest(&self, name: &str, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update(password);
        h.finalize().into()
    }

    /// Takes every slot, so the next verification waits (tests).
    #[cfg(test)]
    pub(super) fn hold_all_slots(&self) -> tokio::sync::OwnedSemaphorePermit {
        let n = self.slots.available_permits() as u32;
        match self.slots.clone().try_acquire_many_owned(n) {
            Ok(permit) => permit,
            Err(e) => panic!("slots taken: {e}"),
        }
    }
}
