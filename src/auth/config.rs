//! `[auth]`: the security files, who may connect without them, and the cost
//! of checking passwords.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::budget::Item;
use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Users: Mosquitto's `name:hash` lines (`$7$` PBKDF2-SHA512 or `$6$`
    /// SHA-512), optionally `:role`. Managed with `fleetgate passwd`.
    pub password_file: Option<PathBuf>,
    /// Topic rules in Mosquitto's format (`user`, `topic`, `pattern`).
    pub acl_file: Option<PathBuf>,
    /// Clients without a user name. Unset: allowed when no file is
    /// configured (then every listener must be on loopback, as Mosquitto 2.0
    /// does), refused when a password file is.
    pub allow_anonymous: Option<bool>,
    /// Password hashes computed at once (each on a blocking thread).
    pub max_concurrent_verifications: NonZeroUsize,
    /// A login waiting longer than this for a verification slot is refused
    /// with CONNACK 3 (server unavailable).
    pub verify_timeout_ms: u64,
    /// Successful logins remembered (user → keyed digest of its password),
    /// so a fleet reconnecting after an outage costs one hash per device,
    /// not one per reconnect. 0: none.
    pub verified_cache_entries: usize,
    /// Re-check, each time a retained message is delivered, that the
    /// client that published it may still write its topic (Mosquitto's
    /// `check_retain_source`): after a reload that took the right away, its
    /// retained messages are no longer delivered. Off: a retained message is
    /// checked against its reader's rights only.
    pub check_retain_source: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            password_file: None,
            acl_file: None,
            allow_anonymous: None,
            max_concurrent_verifications: NonZeroUsize::MIN.saturating_add(1),
            verify_timeout_ms: 10_000,
            verified_cache_entries: 4096,
            check_retain_source: false,
        }
    }
}

impl AuthConfig {
    /// Is a file configured (so logins and topics are checked)?
    pub fn enforced(&self) -> bool {
        self.password_file.is_some() || self.acl_file.is_some()
    }

    /// May a client without a user name connect?
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }

    /// Fail closed: with nobody checked, every listener that can be reached
    /// from another machine needs `allow_anonymous = true`, said on purpose.
    pub fn validate(&self, listeners: &[(&str, SocketAddr)]) -> Result<(), ConfigError> {
        if self.verify_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "auth.verify_timeout_ms must be above 0".into(),
            ));
        }
        if self.password_file.is_some() || self.allow_anonymous == Some(true) {
            return Ok(());
        }
        for (name, addr) in listeners {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "{name} = {addr} can be reached from other machines, but no auth.password_file is set: \
                     anyone could connect. Set auth.password_file (see `fleetgate passwd`), \
                     or auth.allow_anonymous = true to accept anyone on purpose, \
                     or listen on 127.0.0.1"
                )));
            }
        }
        Ok(())
    }

    pub fn budget_items(&self) -> Vec<Item> {
        if !self.enforced() {
            return Vec::new();
        }
        // A cache entry: the user name (≤ 256 bytes), its digest, the map's slot.
        let per_entry = 256 + 32 + 48;
        vec![Item {
            name: "auth: login cache and security files",
            bytes: (self.verified_cache_entries * per_entry) as u64
                + 2 * (super::passwd::MAX_FILE_BYTES * 2),
            why: format!(
                "auth.verified_cache_entries = {} × {per_entry} bytes, and the password and ACL files (each ≤ 4 MiB, parsed)",
                self.verified_cache_entries
            ),
        }]
    }
}
