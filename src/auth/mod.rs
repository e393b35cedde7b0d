//! Who may connect, and what each client may publish, subscribe to and
//! receive.
//!
//! In: the `[auth]` configuration (a Mosquitto-compatible password file and
//! ACL file), each client's CONNECT (client id, user name, password, will),
//! then every topic it publishes to, subscribes to or is sent. Out: a
//! [`Principal`] per connection or the CONNACK code that refuses it, and
//! allow/deny answers. Bound: the two files (each at most 4 MiB, parsed
//! whole), and [`verify`]'s: a cache of at most `auth.verified_cache_entries`
//! successful logins, at most `auth.max_concurrent_verifications` password
//! hashes computed at once, on tokio's blocking pool. An unknown user costs
//! the same hash as a known one ([`verify`]: no timing oracle for names).
//!
//! # Modes
//!
//! - **Open** (no password file, no ACL file): anyone may do anything but
//!   write the gateway's own `fleet/…` and `$` topics, which the edge denies
//!   to everyone. Allowed only on loopback addresses unless
//!   `auth.allow_anonymous = true` (Mosquitto 2.0's default), checked at
//!   start by `Config::validate`.
//! - **Enforced** (either file): a client needs a user name and password from
//!   the password file, or `allow_anonymous = true` and the ACL's anonymous
//!   rules. What a user may do comes from its role ([`Role`]) and the ACL:
//!
//! | role | publish | subscribe / receive |
//! |---|---|---|
//! | `device` | under `v/<its user name>/` only (its will too) | `v/<its user name>/cmd` only |
//! | `dashboard` | nothing | `fleet/#`, and what the ACL grants |
//! | `service` | what the ACL grants | what the ACL grants |
//! | `admin` | everything | everything |
//!
//! ACL `deny` rules apply to every role but `admin`. Without an ACL file a
//! `service` user (every user of a Mosquitto password file) may do
//! everything, as in Mosquitto.
//!
//! # Revocation
//!
//! [`Auth::reload`] (SIGHUP) re-reads both files; a bad file keeps the old
//! tables and says why. Decisions read the current tables every time, so a
//! reload applies at once to live connections: a `#` subscription stops
//! receiving what its client may no longer read, and a user removed from the
//! password file is refused everything ([`Decision::Revoked`]; the edge
//! closes the connection).

pub mod acl;
pub mod cli;
pub mod config;
pub mod passwd;
pub mod verify;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rumqttc::mqttbytes::v4::ConnectReturnCode;

use crate::{metrics::Metrics, topic_filter, topics::DASHBOARD_FILTER};
pub use acl::{Acl, Asker, Want};
pub use config::AuthConfig;
pub use passwd::{PasswordFile, Role};
use verify::Verifier;

/// Why the security files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: {message}")]
    Invalid {
        what: &'static str,
        path: String,
        message: String,
    },
}

/// The loaded files: replaced whole on reload.
#[derive(Debug, Default)]
pub struct Tables {
    /// `None`: open mode (no file configured).
    passwords: Option<PasswordFile>,
    /// What an unknown user's password is verified against
    /// ([`PasswordFile::decoy`]); with the password file.
    decoy: Option<passwd::PasswordHash>,
    acl: Option<Acl>,
    allow_anonymous: bool,
}

impl Tables {
    /// Reads and checks the files `config` names; an empty, unreadable or
    /// invalid file is an error naming the line (fail closed).
    pub fn load(config: &AuthConfig) -> Result<Tables, AuthError> {
        let passwords = match &config.password_file {
            Some(path) => {
                let text = read_limited("password file", path, passwd::MAX_FILE_BYTES)?;
                let file = PasswordFile::parse(&text).map_err(|message| AuthError::Invalid {
                    what: "password file",
                    path: path.display().to_string(),
                    message,
                })?;
                if file.is_empty() {
                    return Err(AuthError::Invalid {
                        what: "password file",
                        path: path.display().to_string(),
                        message: "has no user: nobody could log in (fail closed); add one with `fleetgate passwd add`".into(),
                    });
                }
                Some(file)
            }
            None => None,
        };
        let acl = match &config.acl_file {
            Some(path) => {
                let text = read_limited("ACL file", path, acl::MAX_FILE_BYTES)?;
                Some(Acl::parse(&text).map_err(|message| AuthError::Invalid {
                    what: "ACL file",
                    path: path.display().to_string(),
                    message,
                })?)
            }
            None => None,
        };
        Ok(Tables {
            allow_anonymous: config.anonymous_allowed(),
            decoy: passwords.as_ref().map(PasswordFile::decoy),
            passwords,
            acl,
        })
    }

    /// Is anything checked?
    pub fn enforced(&self) -> bool {
        self.passwords.is_some() || self.acl.is_some()
    }

    /// The role `who` has now; `None` when its user is gone (revoked).
    fn standing(&self, who: &Principal) -> Option<Standing> {
        if !self.enforced() {
            return Some(Standing::Open);
        }
        match &who.username {
            None => Some(Standing::Anonymous),
            // With an ACL file but no password file, user names are unchecked
            // and the ACL's user sections apply (as Mosquitto does).
            Some(name) => match &self.passwords {
                Some(file) => match file.get(name) {
                    Some(entry) => Some(Standing::User(entry.role)),
                    None if who.certified => Some(Standing::User(Role::Device)),
                    None => None,
                },
                None => Some(Standing::User(Role::Service)),
            },
        }
    }

    fn acl_denies(&self, who: &Principal, topic: &str) -> bool {
        self.acl
            .as_ref()
            .is_some_and(|acl| acl.denies(&who.asker(), topic))
    }

    fn acl_allows(&self, who: &Principal, topic: &str, want: Want) -> bool {
        match &self.acl {
            Some(acl) => acl.allows(&who.asker(), topic, want),
            None => true,
        }
    }

    /// May `who` publish to `topic` (its will included)?
    pub fn may_publish(&self, who: &Principal, topic: &str) -> Decision {
        let allowed = match self.standing(who) {
            None => return Decision::Revoked,
            Some(Standing::Open) | Some(Standing::User(Role::Admin)) => true,
            Some(Standing::User(Role::Device)) => {
                device_topic(who, topic) && !self.acl_denies(who, topic)
            }
            Some(Standing::User(Role::Dashboard)) => false,
            Some(Standing::User(Role::Service)) | Some(Standing::Anonymous) => {
                self.acl_allows(who, topic, Want::Write)
            }
        };
        Decision::from(allowed)
    }

    /// May `who` be sent a message published to `topic`? Checked per
    /// delivered message.
    pub fn may_read(&self, who: &Principal, topic: &str) -> Decision {
        let allowed = match self.standing(who) {
            None => return Decision::Revoked,
            Some(Standing::Open) | Some(Standing::User(Role::Admin)) => true,
            Some(Standing::User(Role::Device)) => {
                own_command_topic(who).is_some_and(|t| t == topic) && !self.acl_denies(who, topic)
            }
            Some(Standing::User(Role::Dashboard)) => {
                !self.acl_denies(who, topic)
                    && (topic_filter::matches(DASHBOARD_FILTER, topic)
                        || self
                            .acl
                            .as_ref()
                            .is_some_and(|acl| acl.allows(&who.asker(), topic, Want::Read)))
            }
            Some(Standing::User(Role::Service)) | Some(Standing::Anonymous) => {
                self.acl_allows(who, topic, Want::Read)
            }
        };
        Decision::from(allowed)
    }

    /// May `who` subscribe to `filter`? Granted when it may receive some
    /// of what the filter matches; what it receives is then checked by
    /// [`may_read`](Self::may_read).
    pub fn may_subscribe(&self, who: &Principal, filter: &str) -> Decision {
        let allowed = match self.standing(who) {
            None => return Decision::Revoked,
            Some(Standing::Open) | Some(Standing::User(Role::Admin)) => true,
            Some(Standing::User(Role::Device)) => {
                own_command_topic(who).is_some_and(|t| t == filter) && !self.acl_denies(who, filter)
            }
            Some(Standing::User(Role::Dashboard)) => match &self.acl {
                Some(acl) => {
                    !acl.denies_all(&who.asker(), filter)
                        && (topic_filter::overlaps(DASHBOARD_FILTER, filter)
                            || acl.allows_subscribe(&who.asker(), filter))
                }
                None => topic_filter::overlaps(DASHBOARD_FILTER, filter),
            },
            Some(Standing::User(Role::Service)) | Some(Standing::Anonymous) => match &self.acl {
                Some(acl) => acl.allows_subscribe(&who.asker(), filter),
                None => true,
            },
        };
        Decision::from(allowed)
    }
}

/// What a client is now, for one decision.
#[derive(Debug, Clone, Copy)]
enum Standing {
    Open,
    Anonymous,
    User(Role),
}

/// An allow/deny answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// The client's user is no longer in the password file.
    Revoked,
}

impl Decision {
    pub fn allowed(self) -> bool {
        self == Decision::Allow
    }
}

impl From<bool> for Decision {
    fn from(allowed: bool) -> Self {
        if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

/// Who a connection is: fixed at its CONNECT. What it may do is looked up
/// in the current [`Tables`] at each decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub client_id: Box<str>,
    /// The user name it logged in with (checked against the password file
    /// when there is one), or the subject of its TLS client certificate.
    pub username: Option<Box<str>>,
    /// Its user name is a verified certificate's subject
    /// (`tls.use_identity_as_username`): no password was asked for, and a
    /// name the password file does not list has the role `device`.
    pub certified: bool,
}

impl Principal {
    /// A user of the password file logged in by name alone (an HTTP token,
    /// an SMQ `AUTH`): its client id, for the ACL's `%c`, is its name.
    pub fn user(name: &str) -> Principal {
        Principal {
            client_id: name.into(),
            username: Some(name.into()),
            certified: false,
        }
    }

    fn asker(&self) -> Asker<'_> {
        Asker {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        }
    }
}

/// A device's topics are under `v/<its user name>/`.
fn device_topic(who: &Principal, topic: &str) -> bool {
    who.username.as_deref().is_some_and(|vid| {
        topic
            .strip_prefix("v/")
            .and_then(|t| t.strip_prefix(vid))
            .is_some_and(|t| t.starts_with('/') && t.len() > 1)
    })
}

fn own_command_topic(who: &Principal) -> Option<String> {
    who.username.as_deref().map(crate::topics::command_topic)
}

fn read_limited(what: &'static str, path: &Path, max: u64) -> Result<String, AuthError> {
    let read_error = |source| AuthError::Read {
        what,
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > max {
        return Err(AuthError::Invalid {
            what,
            path: path.display().to_string(),
            message: format!("is {len} bytes; at most {max} are read"),
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// What a CONNECT carries that the gateway checks.
pub struct Credentials<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// The will's topic, checked as a publish.
    pub will_topic: Option<&'a str>,
    /// The subject of the client's verified TLS certificate, when
    /// `tls.use_identity_as_username`: it replaces the CONNECT's user name,
    /// and no password is needed.
    pub certificate: Option<&'a str>,
}

/// The gateway's authority: the current tables, reloadable, and the
/// machinery that verifies passwords without stalling the runtime.
pub struct Auth {
    config: AuthConfig,
    /// The tables' [`Tables::enforced`], readable without the lock: in open
    /// mode every decision is "allow" and costs one load.
    enforced: AtomicBool,
    tables: RwLock<Arc<Tables>>,
    verifier: Verifier,
    metrics: Arc<Metrics>,
}

impl Auth {
    /// Is a retained message's publisher re-checked at each delivery
    /// (`auth.check_retain_source`, with the files enforced)?
    pub fn check_retain_source(&self) -> bool {
        self.config.check_retain_source && self.config.enforced()
    }

    /// Loads the files; refuses to start on any problem with them.
    pub fn new(config: &AuthConfig, metrics: Arc<Metrics>) -> Result<Auth, AuthError> {
        let tables = Tables::load(config)?;
        Ok(Auth {
            enforced: AtomicBool::new(tables.enforced()),
            config: config.clone(),
            tables: RwLock::new(Arc::new(tables)),
            verifier: Verifier::new(config, metrics.clone()),
            metrics,
        })
    }

    /// Open mode, for tests and tools.
    pub fn open(metrics: Arc<Metrics>) -> Auth {
        let config = AuthConfig::default();
        Auth {
            enforced: AtomicBool::new(false),
            tables: RwLock::new(Arc::new(Tables::default())),
            verifier: Verifier::new(&config, metrics.clone()),
            config,
            metrics,
        }
    }

    /// The tables in force now.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables.read().clone()
    }

    pub fn enforced(&self) -> bool {
        self.enforced.load(Ordering::Relaxed)
    }

    /// Is a password file in force (so HTTP needs tokens)?
    pub fn checks_passwords(&self) -> bool {
        self.enforced() && self.tables.read().passwords.is_some()
    }

    /// [`Tables::may_publish`] with the tables in force.
    pub fn may_publish(&self, who: &Principal, topic: &str) -> Decision {
        if !self.enforced() {
            return Decision::Allow;
        }
        self.tables().may_publish(who, topic)
    }

    /// [`Tables::may_read`] with the tables in force.
    pub fn may_read(&self, who: &Principal, topic: &str) -> Decision {
        if !self.enforced() {
            return Decision::Allow;
        }
        self.tables().may_read(who, topic)
    }

    /// [`Tables::may_subscribe`] with the tables in force.
    pub fn may_subscribe(&self, who: &Principal, filter: &str) -> Decision {
        if !self.enforced() {
            return Decision::Allow;
        }
        self.tables().may_subscribe(who, filter)
    }

    /// Re-reads the files. On error the tables in force stay.
    pub fn reload(&self) -> Result<(), AuthError> {
        let tables = Tables::load(&self.config)?;
        self.enforced.store(tables.enforced(), Ordering::Relaxed);
        *self.tables.write() = Arc::new(tables);
        self.verifier.forget_all();
        Metrics::inc(&self.metrics.auth_reloads_total);
        Ok(())
    }

    /// Checks a CONNECT: `Ok` with who it is, or the CONNACK code that
    /// refuses it (counted by reason).
    pub async fn authenticate(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Principal, ConnectReturnCode> {
        let m = &self.metrics;
        if passwd::check_literal_id(credentials.client_id).is_err() {
            Metrics::inc(&m.connections_refused_total_bad_client_id);
            return Err(ConnectReturnCode::BadClientId);
        }
        let tables = self.tables();
        if let Some(identity) = credentials.certificate {
            return self.authenticate_certified(&tables, credentials, identity);
        }
        let principal = Principal {
            client_id: credentials.client_id.into(),
            username: credentials.username.map(Into::into),
            certified: false,
        };
        if tables.enforced() {
            match (credentials.username, &tables.passwords) {
                (None, _) if !tables.allow_anonymous => {
                    Metrics::inc(&m.connections_refused_total_not_authorized);
                    return Err(ConnectReturnCode::NotAuthorized);
                }
                (None, _) | (Some(_), None) => {}
                (Some(name), Some(_)) => {
                    let password = credentials.password.unwrap_or_default();
                    let matched = match self.check_login(&tables, name, password).await {
                        Ok(role) => role.is_some(),
                        Err(verify::Busy) => return Err(ConnectReturnCode::ServiceUnavailable),
                    };
                    if !matched {
                        Metrics::inc(&m.connections_refused_total_bad_credentials);
                        return Err(ConnectReturnCode::BadUserNamePassword);
                    }
                }
            }
        }
        self.check_will(&tables, principal, credentials.will_topic)
    }

    /// A will is checked as a publish at CONNECT (and again when it fires).
    fn check_will(
        &self,
        tables: &Tables,
        principal: Principal,
        will_topic: Option<&str>,
    ) -> Result<Principal, ConnectReturnCode> {
        match will_topic {
            Some(topic) if !tables.may_publish(&principal, topic).allowed() => {
                Metrics::inc(&self.metrics.connections_refused_total_will_denied);
                Err(ConnectReturnCode::NotAuthorized)
            }
            _ => Ok(principal),
        }
    }

    /// A client whose certificate the TLS handshake verified: its subject is
    /// its user name (refused if it is not a literal id); only its will is
    /// left to check.
    fn authenticate_certified(
        &self,
        tables: &Tables,
        credentials: &Credentials<'_>,
        identity: &str,
    ) -> Result<Principal, ConnectReturnCode> {
        let m = &self.metrics;
        if passwd::check_literal_id(identity).is_err() {
            Metrics::inc(&m.connections_refused_total_bad_credentials);
            return Err(ConnectReturnCode::BadUserNamePassword);
        }
        let principal = Principal {
            client_id: credentials.client_id.into(),
            username: Some(identity.into()),
            certified: true,
        };
        self.check_will(tables, principal, credentials.will_topic)
    }

    /// The role of user `name` if `password` is its password, `None` if
    /// not or if there is no such user: an unknown user is verified against
    /// the file's decoy, so it takes as long as a wrong password (no timing
    /// oracle for names). A name that is not literal is in no file and
    /// could never be, so it is refused at once.
    async fn check_login(
        &self,
        tables: &Tables,
        name: &str,
        password: &[u8],
    ) -> Result<Option<Role>, verify::Busy> {
        let (Some(file), Some(decoy)) = (&tables.passwords, &tables.decoy) else {
            return Ok(None);
        };
        if passwd::check_literal_id(name).is_err() {
            return Ok(None);
        }
        match file.get(name) {
            Some(entry) => {
                let role = entry.role;
                let ok = self
                    .verifier
                    .verify(name, password, entry.hash.clone())
                    .await?;
                Ok(ok.then_some(role))
            }
            None => {
                self.verifier
                    .verify_unknown(password, decoy.clone())
                    .await?;
                Ok(None)
            }
        }
    }

    /// Checks a user name and password for HTTP (a bearer token is
    /// `<user>:<password>`): the user's role, or `None`.
    pub async fn authenticate_token(&self, name: &str, password: &str) -> Option<Role> {
        self.login(name, password.as_bytes()).await.ok().flatten()
    }

    /// A user name and password (an SMQ `AUTH`): the user's role, `None`
    /// when either is wrong, `Err` when no verification slot came free.
    pub async fn login(&self, name: &str, password: &[u8]) -> Result<Option<Role>, verify::Busy> {
        let tables = self.tables();
        self.check_login(&tables, name, password).await
    }

    /// [`may_publish`](Self::may_publish) for a caller that is `None` when
    /// it gave no login (HTTP and SMQ without a password file): allowed
    /// then, unless a password file is in force, where a caller without a
    /// login is a bug upstream and is denied (fail closed).
    pub fn may_publish_as(&self, who: Option<&Principal>, topic: &str) -> Decision {
        match who {
            Some(who) => self.may_publish(who, topic),
            None => Decision::from(!self.checks_passwords()),
        }
    }

    /// [`may_read`](Self::may_read) for a caller that may have no login,
    /// as [`may_publish_as`](Self::may_publish_as).
    pub fn may_read_as(&self, who: Option<&Principal>, topic: &str) -> Decision {
        match who {
            Some(who) => self.may_read(who, topic),
            None => Decision::from(!self.checks_passwords()),
        }
    }

    /// [`may_subscribe`](Self::may_subscribe) for a caller that may have
    /// no login, as [`may_publish_as`](Self::may_publish_as).
    pub fn may_subscribe_as(&self, who: Option<&Principal>, filter: &str) -> Decision {
        match who {
            Some(who) => self.may_subscribe(who, filter),
            None => Decision::from(!self.checks_passwords()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passwd::{Entry, PasswordHash};

    /// An `Auth` over a password file of one user, `alice` (password
    /// `secret`, 1000 iterations), with `config` otherwise.
    fn with_alice(mut config: AuthConfig) -> (Auth, Arc<Metrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = PasswordFile::default();
        let hash = PasswordHash::new(b"secret", 1000).unwrap();
        file.insert(
            "alice".into(),
            Entry {
                hash,
                role: Role::Service,
            },
        );
        let path = dir.path().join("passwd");
        std::fs::write(&path, file.render()).unwrap();
        config.password_file = Some(path);
        let metrics = Arc::new(Metrics::default());
        let auth = Auth::new(&config, metrics.clone()).unwrap();
        (auth, metrics, dir)
    }

    fn login<'a>(user: &'a str, password: &'a str) -> Credentials<'a> {
        Credentials {
            client_id: "c1",
            username: Some(user),
            password: Some(password.as_bytes()),
            will_topic: None,
            certificate: None,
        }
    }

    fn verifications(m: &Metrics) -> u64 {
        m.auth_verifications_total.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_verification_as_a_known_one_does() {
        let (auth, m, _dir) = with_alice(AuthConfig::default());
        let refused = auth.authenticate(&login("mallory", "secret")).await;
        assert_eq!(refused, Err(ConnectReturnCode::BadUserNamePassword));
        assert_eq!(verifications(&m), 1, "the unknown user was not verified");
        let refused = auth.authenticate(&login("alice", "wrong")).await;
        assert_eq!(refused, Err(ConnectReturnCode::BadUserNamePassword));
        assert_eq!(verifications(&m), 2);
        // HTTP tokens take the same path.
        assert_eq!(auth.authenticate_token("mallory", "secret").await, None);
        assert_eq!(verifications(&m), 3);
        assert_eq!(
            auth.authenticate_token("alice", "secret").await,
            Some(Role::Service)
        );
        assert_eq!(verifications(&m), 4);
        assert_eq!(
            m.connections_refused_total_bad_credentials
                .load(Ordering::Relaxed),
            2
        );
    }

    #[tokio::test]
    async fn an_unknown_user_waits_for_a_verification_slot_as_a_known_one_does() {
        let config = AuthConfig {
            verify_timeout_ms: 20,
            ..AuthConfig::default()
        };
        let (auth, m, _dir) = with_alice(config);
        let _held = auth.verifier.hold_all_slots();
        for user in ["mallory", "alice"] {
            let refused = auth.authenticate(&login(user, "secret")).await;
            assert_eq!(
                refused,
                Err(ConnectReturnCode::ServiceUnavailable),
                "{user}"
            );
        }
        assert_eq!(
            m.connections_refused_total_auth_busy
                .load(Ordering::Relaxed),
            2
        );
        assert_eq!(verifications(&m), 0);
    }

    #[test]
    fn the_decoy_costs_what_most_entries_of_the_file_cost() {
        let mosquitto_2 = PasswordFile::parse(
            "alice:$7$101$LtaWSW8aupJ2mxyT$S3AYzWKkcCNPeIc6tJ/g36luWIYh+vwrtwTxgjgW6dOGvFgbgtpUcg1upboy29sdOrHWaKBolyPQxhoJ2A81qg==\n",
        )
        .unwrap();
        let decoy = mosquitto_2.decoy();
        assert!(
            matches!(
                decoy,
                PasswordHash::Pbkdf2Sha512 {
                    iterations: 101,
                    ..
                }
            ),
            "{decoy:?}"
        );
        assert!(!decoy.verify(b"secret") && !decoy.verify(b""));
        let empty = PasswordFile::default().decoy();
        assert!(matches!(
            empty,
            PasswordHash::Pbkdf2Sha512 {
                iterations: passwd::NEW_ENTRY_ITERATIONS,
                ..
            }
        ));
    }
}
