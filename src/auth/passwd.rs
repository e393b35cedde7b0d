//! The password file: Mosquitto's format, plus an optional role.
//!
//! In: the file's text. Out: a [`PasswordFile`] (user → hash and role) or
//! an error naming the line; verification of a password against an entry;
//! new entries for the `fleetgate passwd` command. Bound: the file's size
//! (read whole; the gateway refuses files over [`MAX_FILE_BYTES`]).
//!
//! A line is `name:hash` as `mosquitto_passwd` writes it, or `name:hash:role`
//! (the role is fleetgate's; a Mosquitto file has none, and its users get
//! the role [`Role::Service`]: the ACL file alone says what they may do, as
//! it did in Mosquitto). Hashes read:
//!
//! - `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512 (Mosquitto 2.0
//!   writes 101 iterations, 2.1 writes 210 000); base64 salt and hash;
//! - `$6$<salt>$<hash>`: SHA-512 of the password then the salt (Mosquitto 1.x).
//!
//! New entries are `$7$` with [`NEW_ENTRY_ITERATIONS`] (OWASP's 2023 figure
//! for PBKDF2-HMAC-SHA512, and Mosquitto 2.1's default) and a 12-byte salt, so
//! Mosquitto 2.x reads what fleetgate writes.
//!
//! Fail closed (CVE-2018-12551: a blank password line was a user): a line
//! without a hash, with a plaintext password, with an unknown hash kind, a
//! duplicate user or an unknown role is an error, and so is a file with no
//! user at all.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest as _, Sha512};
use subtle::ConstantTimeEq as _;

/// PBKDF2 iterations of an entry `fleetgate passwd` writes.
pub const NEW_ENTRY_ITERATIONS: u32 = 210_000;
/// Largest password file read: ~20 000 users.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Fewest and most PBKDF2 iterations accepted in a file: below 1 is not a
/// hash; above 10 million one login would take seconds of CPU.
const ITERATIONS: std::ops::RangeInclusive<u32> = 1..=10_000_000;
const SALT_BYTES: usize = 12;

/// What a user may do, before the ACL file adds or denies (`crate::auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A vehicle: its username is its vehicle id.
    Device,
    /// Reads `fleet/#` and what the ACL grants; publishes nothing.
    Dashboard,
    /// What the ACL grants (a Mosquitto user's role).
    Service,
    /// Everything but the gateway's own namespace.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "device" => Some(Role::Device),
            "dashboard" => Some(Role::Dashboard),
            "service" => Some(Role::Service),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Dashboard => "dashboard",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PBKDF2-SHA512({iterations} iterations)")
            }
            PasswordHash::Sha512 { .. } => f.write_str("SHA-512 (Mosquitto 1.x)"),
        }
    }
}

impl PasswordHash {
    /// A new `$7$` hash of `password` with a random salt.
    pub fn new(password: &[u8], iterations: u32) -> Result<PasswordHash, getrandom::Error> {
        let mut salt = vec![0u8; SALT_BYTES];
        getrandom::fill(&mut salt)?;
        let hash = pbkdf2_sha512(password, &salt, iterations);
        Ok(PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        })
    }

    /// Does `password` hash to this? Constant-time in the comparison; as
    /// slow as the hash's iteration count: call it off the async runtime.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => (pbkdf2_sha512(password, salt, *iterations), hash),
            PasswordHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                (digest.finalize().to_vec(), hash)
            }
        };
        computed.len() == stored.len() && bool::from(computed.ct_eq(stored))
    }

    fn parse(text: &str) -> Result<PasswordHash, String> {
        let decode = |what: &str, b64: &str| {
            BASE64
                .decode(b64)
                .map_err(|_| format!("its {what} is not base64"))
        };
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|n| ITERATIONS.contains(n))
                    .ok_or_else(|| {
                        format!(
                            "its iteration count {iterations:?} is not in {}..={}",
                            ITERATIONS.start(),
                            ITERATIONS.end()
                        )
                    })?;
                let (salt, hash) = (decode("salt", salt)?, decode("hash", hash)?);
                if salt.is_empty() || hash.len() != 64 {
                    return Err("its $7$ hash is not a PBKDF2-SHA512 hash (64 bytes)".into());
                }
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                })
            }
            ["", "6", salt, hash] => {
                let (salt, hash) = (decode("salt", salt)?, decode("hash", hash)?);
                if salt.is_empty() || hash.len() != 64 {
                    return Err("its $6$ hash is not a SHA-512 hash (64 bytes)".into());
                }
                Ok(PasswordHash::Sha512 { salt, hash })
            }
            ["", kind, ..] => Err(format!(
                "its hash kind ${kind}$ is not one fleetgate reads ($7$ PBKDF2-SHA512, $6$ SHA-512)"
            )),
            _ => Err("its password is not hashed (run `fleetgate passwd add` to hash it)".into()),
        }
    }
}

impl fmt::Display for PasswordHash {
    /// The file's form of the hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                BASE64.encode(salt),
                BASE64.encode(hash)
            ),
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", BASE64.encode(salt), BASE64.encode(hash))
            }
        }
    }
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

/// One user of the password file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub hash: PasswordHash,
    pub role: Role,
}

/// A parsed password file, in file order for writing it back.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    names: Vec<String>,
    entries: HashMap<String, Entry>,
}

impl PasswordFile {
    /// Parses a whole file. `Err` names the first bad line (1-based) and why.
    pub fn parse(text: &str) -> Result<PasswordFile, String> {
        let mut file = PasswordFile::default();
        for (index, line) in text.lines().enumerate() {
            let n = index + 1;
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (name, rest) = line
                .split_once(':')
                .ok_or_else(|| format!("line {n}: no ':' between a user name and a hash"))?;
            if let Err(why) = check_name(name) {
                return Err(format!("line {n}: user name {name:?} {why}"));
            }
            let (hash, role) = match rest.split_once(':') {
                Some((hash, role)) => {
                    let role = Role::parse(role.trim()).ok_or_else(|| {
                        format!(
                            "line {n}: user {name:?} has the unknown role {role:?} (device, dashboard, service or admin)"
                        )
                    })?;
                    (hash, role)
                }
                None => (rest, Role::Service),
            };
            if hash.trim().is_empty() {
                return Err(format!("line {n}: user {name:?} has no password hash"));
            }
            let hash = PasswordHash::parse(hash.trim())
                .map_err(|why| format!("line {n}: user {name:?}: {why}"))?;
            if file.entries.contains_key(name) {
                return Err(format!("line {n}: user {name:?} is listed twice"));
            }
            file.insert(name.to_owned(), Entry { hash, role });
        }
        Ok(file)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Users in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.names
            .iter()
            .filter_map(|n| self.entries.get(n).map(|e| (n.as_str(), e)))
    }

    /// Adds `name`, or replaces its entry in place.
    pub fn insert(&mut self, name: String, entry: Entry) {
        if self.entries.insert(name.clone(), entry).is_none() {
            self.names.push(name);
        }
    }

    /// A hash that no password matches, as costly to verify as most of
    /// this file's entries (a fleetgate file's: [`NEW_ENTRY_ITERATIONS`];
    /// a Mosquitto 2.0 file's: 101), so that refusing an unknown user
    /// takes as long as refusing a known one (`auth::verify`). Fixed salt,
    /// all-zero hash: PBKDF2 and SHA-512 never output 64 zero bytes in
    /// practice.
    pub fn decoy(&self) -> PasswordHash {
        // Cost of an entry: Some(iterations) for PBKDF2, None for SHA-512.
        let mut costs: HashMap<Option<u32>, usize> = HashMap::new();
        for entry in self.entries.values() {
            let cost = match &entry.hash {
                PasswordHash::Pbkdf2Sha512 { iterations, .. } => Some(*iterations),
                PasswordHash::Sha512 { .. } => None,
            };
            *costs.entry(cost).or_default() += 1;
        }
        // The most common cost; on a tie the dearer one (the slower answer
        // is the one an attacker would otherwise tell apart).
        let typical = costs
            .into_iter()
            .max_by_key(|&(cost, n)| (n, cost))
            .map_or(Some(NEW_ENTRY_ITERATIONS), |(cost, _)| cost);
        let salt = b"fleetgate-decoy".to_vec();
        let hash = vec![0u8; 64];
        match typical {
            Some(iterations) => PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            },
            None => PasswordHash::Sha512 { salt, hash },
        }
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.names.retain(|n| n != name);
        self.entries.remove(name).is_some()
    }

    /// The file's text. A `service` user is written without its role, so a
    /// file of only service users stays readable by Mosquitto.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, entry) in self.iter() {
            out.push_str(name);
            out.push(':');
            out.push_str(&entry.hash.to_string());
            if entry.role != Role::Service {
                out.push(':');
                out.push_str(entry.role.as_str());
            }
            out.push('\n');
        }
        out
    }
}

/// A user name of the file: a literal id ([`check_literal_id`]) without
/// `:`, the file's separator.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    check_literal_id(name)?;
    if name.contains(':') {
        return Err("contains ':'");
    }
    Ok(())
}

/// A client id or user name that may feed a topic pattern: `v/<name>/…` and
/// the ACL's `%u`/`%c` take it literally (CVE-2017-7650), so no wildcard,
/// separator, NUL or control character, and not empty.
pub fn check_literal_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    if id.len() > 256 {
        return Err("is longer than 256 bytes");
    }
    if id.contains(['+', '#', '/']) {
        return Err("contains '+', '#' or '/'");
    }
    if id.chars().any(char::is_control) {
        return Err("contains a NUL or control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Mosquitto 2.0.11's `mosquitto_passwd -b pw alice secret`.
    const MOSQUITTO_2: &str = "alice:$7$101$LtaWSW8aupJ2mxyT$S3AYzWKkcCNPeIc6tJ/g36luWIYh+vwrtwTxgjgW6dOGvFgbgtpUcg1upboy29sdOrHWaKBolyPQxhoJ2A81qg==\n";
    /// A Mosquitto 1.x line: SHA-512 of "hunter2" then the salt.
    const MOSQUITTO_1: &str = "carol:$6$MDEyMzQ1Njc4OWFi$Kgl3AxuVCetFEGDDZOAh44c3ssh9wvPft10MPC9Tjr1rwsIDmYUEICH/zUOFhM8vCQKmMb8nXrQTl7q2T8alUw==\n";

    #[test]
    fn reads_what_mosquitto_2_writes() {
        let file = PasswordFile::parse(MOSQUITTO_2).unwrap();
        let alice = file.get("alice").unwrap();
        assert_eq!(alice.role, Role::Service);
        assert!(alice.hash.verify(b"secret"));
        assert!(!alice.hash.verify(b"Secret"));
        assert!(!alice.hash.verify(b""));
    }

    #[test]
    fn reads_what_mosquitto_1_wrote() {
        let file = PasswordFile::parse(MOSQUITTO_1).unwrap();
        let carol = file.get("carol").unwrap();
        assert!(carol.hash.verify(b"hunter2"));
        assert!(!carol.hash.verify(b"hunter3"));
    }

    #[test]
    fn a_new_entry_round_trips_through_the_file_with_its_role() {
        let mut file = PasswordFile::default();
        let hash = PasswordHash::new(b"pw", 1000).unwrap();
        file.insert(
            "truck-7".into(),
            Entry {
                hash,
                role: Role::Device,
            },
        );
        let text = file.render();
        assert!(text.starts_with("truck-7:$7$1000$"), "{text}");
        assert!(text.trim_end().ends_with(":device"), "{text}");
        let again = PasswordFile::parse(&text).unwrap();
        let entry = again.get("truck-7").unwrap();
        assert_eq!(entry.role, Role::Device);
        assert!(entry.hash.verify(b"pw"));
    }

    #[test]
    fn fails_closed_naming_the_line() {
        let cases = [
            ("bob:\n", "line 1: user \"bob\" has no password hash"),
            ("# c\nbob\n", "line 2: no ':'"),
            ("bob:plaintext\n", "is not hashed"),
            ("bob:$5$abc$def\n", "hash kind $5$"),
            ("bob:$7$0$LtaWSW8aupJ2mxyT$S3AY\n", "iteration count"),
            ("bob:$7$101$!!$S3AY\n", "salt is not base64"),
            ("b+b:$6$MDEy$S3AY\n", "contains '+', '#' or '/'"),
            (
                &format!("{}{}", MOSQUITTO_2, MOSQUITTO_2),
                "line 2: user \"alice\" is listed twice",
            ),
            (
                &MOSQUITTO_2.replace('\n', ":root\n"),
                "unknown role \"root\"",
            ),
        ];
        for (text, want) in cases {
            let err = PasswordFile::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn names_that_would_be_wildcards_are_refused() {
        for bad in ["", "a+b", "#", "a/b", "nul\0", "tab\t", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["truck-7", "mosq-AbC123", "déjà.vu", "a b"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }
}
