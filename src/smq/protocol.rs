//! The seed's consumer protocol, as bytes: command lines in, frames out.
//!
//! In: one line (without its `\n`; a `\r` anywhere is dropped, as the seed
//! did). Out: a [`Command`], or the [`SmqError`] to send back. Every reply
//! is a frame: a 4-byte big-endian length, then the payload; a message's
//! payload is its 16 raw id bytes, then the body. A successful `SUB`, `FIN`
//! or `REQ` is answered with nothing at all (the seed's clients read
//! nothing after them).
//!
//! Parsing follows the seed: words split on single spaces, the command is
//! case-insensitive, extra words are ignored, a missing word is
//! `E_INVALID`, an empty topic or channel is `E_BAD_TOPIC` /
//! `E_BAD_CHANNEL`.
//!
//! `AUTH <user> <password>` is fleetgate's (the seed had no login; NSQ has
//! an `AUTH` command, and its error names): the password is the rest of
//! the line after the user name and one space, so it may hold spaces. It
//! is the one command answered on success, with the frame `OK`.

use std::fmt::Write as _;

use super::config::{MAX_CHANNEL_BYTES, MAX_TOPIC_BYTES};

/// The error strings the seed sends, and the few fleetgate adds for its
/// bounds (same style). Each is the whole payload of its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SmqError {
    /// Unknown command, missing word, or a command out of turn.
    #[error("E_INVALID")]
    Invalid,
    #[error("E_BAD_TOPIC")]
    BadTopic,
    #[error("E_BAD_CHANNEL")]
    BadChannel,
    #[error("E_BAD_MESSAGE")]
    BadMessage,
    /// `FIN`/`REQ` of an id this consumer does not hold (the seed's words).
    #[error("UUID not in flight")]
    NotInFlight,
    #[error("E_TOO_MANY_TOPICS")]
    TooManyTopics,
    #[error("E_TOO_MANY_CHANNELS")]
    TooManyChannels,
    #[error("E_TOO_MANY_CONSUMERS")]
    TooManyConsumers,
    /// The SMQ's queue into the broker is full (`smq.publish_queue`): try
    /// again.
    #[error("E_BUSY")]
    Busy,
    /// A password file is in force and the first line was not `AUTH`.
    #[error("E_AUTH_FIRST")]
    AuthFirst,
    /// `AUTH` with a wrong user name or password.
    #[error("E_AUTH_FAILED")]
    AuthFailed,
    /// The ACL does not let the user read this topic (`SUB`, and each
    /// `GET`, after a reload).
    #[error("E_UNAUTHORIZED")]
    Unauthorized,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Auth { user: &'a str, password: &'a str },
    Sub { topic: &'a str, channel: &'a str },
    Get,
    Fin(&'a str),
    Req(&'a str),
}

pub fn parse(line: &str) -> Result<Command<'_>, SmqError> {
    let mut words = line.split(' ');
    let name = words.next().unwrap_or_default();
    if name.eq_ignore_ascii_case("SUB") {
        let (Some(topic), Some(channel)) = (words.next(), words.next()) else {
            return Err(SmqError::Invalid);
        };
        check_topic(topic)?;
        check_channel(channel)?;
        Ok(Command::Sub { topic, channel })
    } else if name.eq_ignore_ascii_case("AUTH") {
        let rest = line.get(name.len() + 1..).unwrap_or_default();
        match rest.split_once(' ') {
            Some((user, password)) if !user.is_empty() => Ok(Command::Auth { user, password }),
            _ => Err(SmqError::Invalid),
        }
    } else if name.eq_ignore_ascii_case("GET") {
        Ok(Command::Get)
    } else if name.eq_ignore_ascii_case("FIN") {
        words.next().map(Command::Fin).ok_or(SmqError::Invalid)
    } else if name.eq_ignore_ascii_case("REQ") {
        words.next().map(Command::Req).ok_or(SmqError::Invalid)
    } else {
        Err(SmqError::Invalid)
    }
}

/// An SMQ topic is an MQTT topic name of the embedded broker: not empty, no
/// wildcard or NUL, not a `$` topic, at most [`MAX_TOPIC_BYTES`].
pub fn check_topic(topic: &str) -> Result<(), SmqError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_BYTES
        && !topic.starts_with('$')
        && !topic.contains(['+', '#', '\0']);
    if ok {
        Ok(())
    } else {
        Err(SmqError::BadTopic)
    }
}

/// A channel: 1 to [`MAX_CHANNEL_BYTES`] bytes, no control characters.
pub fn check_channel(channel: &str) -> Result<(), SmqError> {
    let ok = !channel.is_empty()
        && channel.len() <= MAX_CHANNEL_BYTES
        && !channel.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(SmqError::BadChannel)
    }
}

/// A frame: the payload's length (4 bytes, big-endian), then the payload.
pub fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The id as the seed's clients print it and send it back in `FIN`/`REQ`:
/// lowercase hex, grouped 8-4-4-4-12.
pub fn format_id(id: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses [`format_id`]'s form (either case); `None` for anything else.
pub fn parse_id(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if s.len() != 36 || hex.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        id[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_the_seed_split_them() {
        assert_eq!(
            parse("SUB t ch"),
            Ok(Command::Sub {
                topic: "t",
                channel: "ch"
            })
        );
        assert_eq!(
            parse("sub t ch extra"),
            Ok(Command::Sub {
                topic: "t",
                channel: "ch"
            })
        );
        assert_eq!(parse("GET"), Ok(Command::Get));
        assert_eq!(parse("FIN abc"), Ok(Command::Fin("abc")));
        assert_eq!(parse("REQ abc"), Ok(Command::Req("abc")));
        assert_eq!(parse("SUB t"), Err(SmqError::Invalid));
        assert_eq!(parse("SUB  ch"), Err(SmqError::BadTopic));
        assert_eq!(parse("SUB t "), Err(SmqError::BadChannel));
        assert_eq!(parse("FIN"), Err(SmqError::Invalid));
        assert_eq!(
            parse("AUTH alice pass with spaces"),
            Ok(Command::Auth {
                user: "alice",
                password: "pass with spaces"
            })
        );
        assert_eq!(parse("auth alice"), Err(SmqError::Invalid));
        assert_eq!(parse("AUTH  pw"), Err(SmqError::Invalid));
        assert_eq!(parse(""), Err(SmqError::Invalid));
        assert_eq!(parse("PUB t x"), Err(SmqError::Invalid));
        assert_eq!(parse("SUB a/# ch"), Err(SmqError::BadTopic));
        assert_eq!(parse("SUB $SYS/x ch"), Err(SmqError::BadTopic));
    }

    #[test]
    fn errors_are_the_seeds_strings() {
        assert_eq!(SmqError::Invalid.to_string(), "E_INVALID");
        assert_eq!(SmqError::BadTopic.to_string(), "E_BAD_TOPIC");
        assert_eq!(SmqError::BadChannel.to_string(), "E_BAD_CHANNEL");
        assert_eq!(SmqError::BadMessage.to_string(), "E_BAD_MESSAGE");
        assert_eq!(SmqError::NotInFlight.to_string(), "UUID not in flight");
    }

    #[test]
    fn ids_round_trip_in_the_seeds_format() {
        let id: [u8; 16] = core::array::from_fn(|i| (i * 17) as u8);
        let s = format_id(&id);
        assert_eq!(s, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(parse_id(&s), Some(id));
        assert_eq!(parse_id(&s.to_uppercase()), Some(id));
        assert_eq!(parse_id("00112233445566778899aabbccddeeff"), None);
        assert_eq!(parse_id("zz112233-4455-6677-8899-aabbccddeeff"), None);
    }

    #[test]
    fn a_frame_is_its_length_then_its_payload() {
        assert_eq!(frame(&[b"E_", b"INVALID"]), b"\0\0\0\x09E_INVALID");
    }
}
