//! The login rumqttd accepts, and only from the edge, which replays every
//! handed-off client's CONNECT with it.
//!
//! In: the kernel's randomness. Out: an [`InternalLogin`]. Bound: two short
//! strings. rumqttd listens on no socket (handed-off clients come through
//! in-process pipes), so this is a second lock, not the only one.

/// The user name and password rumqttd accepts, and only from the edge: a
/// per-process secret of 256 random bits, never written anywhere, so a local
/// process that finds the internal port still cannot bypass the edge.
#[derive(Clone)]
pub struct InternalLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for InternalLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl InternalLogin {
    /// A fresh login with a new secret.
    pub fn generate() -> InternalLogin {
        let mut secret = [0u8; 32];
        // The kernel's randomness; should /dev/urandom be unreadable,
        // std's per-process hash keys (themselves seeded from it).
        let from_kernel = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut secret));
        if from_kernel.is_err() {
            use std::hash::{BuildHasher, Hasher};
            for chunk in secret.chunks_mut(8) {
                let word = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
            }
        }
        InternalLogin {
            username: "fleetgate-edge".to_owned(),
            password: secret.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}
