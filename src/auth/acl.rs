//! The ACL file: Mosquitto's format and Mosquitto 2.0's rules.
//!
//! In: the file's text. Out: an [`Acl`] that answers whether a client may
//! read or write a topic, or subscribe to a filter; or an error naming the
//! line. Bound: the file's size (read whole, at most [`MAX_FILE_BYTES`]);
//! a check walks the rules of one user plus the patterns and allocates
//! nothing unless a pattern puts `%u`/`%c` inside a level (`a-%u`).
//!
//! ```text
//! # before any `user` line: rules for anonymous clients
//! topic read fleet/#
//! user alice
//! topic readwrite sensors/#       # `topic <t>` alone is readwrite
//! topic deny sensors/secret/#
//! pattern read v/%u/cmd           # for every client, anywhere in the file
//! ```
//!
//! - `deny` is evaluated first: a topic a deny rule matches is refused,
//!   whatever else grants it; then a rule granting the access allows; **no
//!   match = deny**.
//! - `%u` is the user name (a pattern with `%u` never matches an anonymous
//!   client), `%c` the client id; both are literal ids (see
//!   [`super::passwd::check_literal_id`]), so they never act as wildcards.
//! - A SUBSCRIBE to a filter is granted when some read rule could match a
//!   topic of it (so `#` is granted to a dashboard that may read `fleet/#`)
//!   and no deny rule covers all of it; what it receives is then checked
//!   per delivered message, as Mosquitto does.
//! - Fail closed (CVE-2018-12550): a line that is not a comment, `user`,
//!   `topic` or `pattern`, an invalid filter, or a file without any rule
//!   is an error.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::topic_filter::valid_filter;

/// Largest ACL file read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants(self, want: Want) -> bool {
        matches!(
            (self, want),
            (Access::ReadWrite, _) | (Access::Read, Want::Read) | (Access::Write, Want::Write)
        )
    }
}

/// What a client asks to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

#[derive(Debug, Clone)]
struct Rule {
    access: Access,
    filter: String,
}

/// Who is asking, as the ACL's patterns see them.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

impl Acl {
    /// Parses a whole file. `Err` names the first bad line (1-based) and why.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        let mut rules = 0usize;
        for (index, line) in text.lines().enumerate() {
            let n = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(format!("line {n}: `user` needs a user name"));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest).map_err(|why| format!("line {n}: {why}"))?;
                    rules += 1;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &user {
                            Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "line {n}: unknown keyword {other:?} (user, topic, pattern or a # comment)"
                    ))
                }
            }
        }
        if rules == 0 {
            return Err("the ACL file has no rule: it would deny everything (fail closed); add `topic`/`pattern` lines".into());
        }
        Ok(acl)
    }

    fn rules<'s>(&'s self, who: &Asker<'_>) -> impl Iterator<Item = &'s Rule> + 's {
        let own: &[Rule] = match who.username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        own.iter().chain(self.patterns.iter())
    }

    /// May `who` read (receive) or write (publish to) `topic`?
    pub fn allows(&self, who: &Asker<'_>, topic: &str, want: Want) -> bool {
        let mut granted = false;
        for rule in self.rules(who) {
            if !relate(&rule.filter, who, topic, Relation::Matches) {
                continue;
            }
            if rule.access == Access::Deny {
                return false;
            }
            granted |= rule.access.grants(want);
        }
        granted
    }

    /// Does a deny rule match `topic` for `who`?
    pub fn denies(&self, who: &Asker<'_>, topic: &str) -> bool {
        self.rules(who).any(|rule| {
            rule.access == Access::Deny && relate(&rule.filter, who, topic, Relation::Matches)
        })
    }

    /// Does a deny rule cover every topic `filter` matches, for `who`?
    pub fn denies_all(&self, who: &Asker<'_>, filter: &str) -> bool {
        self.rules(who).any(|rule| {
            rule.access == Access::Deny && relate(&rule.filter, who, filter, Relation::Contains)
        })
    }

    /// May `who` subscribe to `filter`: does some read rule overlap it,
    /// with no deny rule covering all of it?
    pub fn allows_subscribe(&self, who: &Asker<'_>, filter: &str) -> bool {
        if self.denies_all(who, filter) {
            return false;
        }
        self.rules(who).any(|rule| {
            rule.access.grants(Want::Read) && relate(&rule.filter, who, filter, Relation::Overlaps)
        })
    }
}

/// How a rule's filter relates to a topic or a client's filter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Relation {
    /// The rule matches the topic (MQTT 3.1.1 §4.7).
    Matches,
    /// Some topic matches both the rule and the client's filter.
    Overlaps,
    /// The rule matches every topic the client's filter matches.
    Contains,
}

/// Walks the rule's levels beside the other's. A rule level with `%u` or
/// `%c` is substituted and then compared **literally**, never read as a
/// wildcard; a rule that needs `%u` from a client without a user name
/// relates to nothing.
fn relate(rule: &str, who: &Asker<'_>, other: &str, relation: Relation) -> bool {
    if relation == Relation::Matches && other.starts_with('$') && rule.starts_with(['+', '#']) {
        return false;
    }
    let (mut r, mut o) = (rule.split('/'), other.split('/'));
    loop {
        match (r.next(), o.next()) {
            (Some("#"), _) => return true,
            (_, Some("#")) if relation == Relation::Overlaps => return true,
            (Some("+"), Some(level)) => {
                if relation == Relation::Contains && level == "#" {
                    return false;
                }
            }
            (Some(rule_level), Some(level)) => {
                let Some(literal) = substitute(rule_level, who) else {
                    return false;
                };
                let wildcard = level == "+" || level == "#";
                let same = match relation {
                    Relation::Matches => literal == level,
                    Relation::Overlaps => wildcard || literal == level,
                    Relation::Contains => !wildcard && literal == level,
                };
                if !same {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One level of a rule with `%u` and `%c` replaced; `None` when it needs a
/// user name the client does not have. Borrowed unless it has either.
fn substitute<'r>(level: &'r str, who: &Asker<'_>) -> Option<Cow<'r, str>> {
    if !level.contains('%') {
        return Some(Cow::Borrowed(level));
    }
    let mut out = level.to_owned();
    if out.contains("%u") {
        out = out.replace("%u", who.username?);
    }
    if out.contains("%c") {
        out = out.replace("%c", who.client_id);
    }
    Some(Cow::Owned(out))
}

fn parse_rule(rest: &str) -> Result<Rule, String> {
    let (first, after) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let (access, filter) = match first {
        "read" => (Access::Read, after.trim()),
        "write" => (Access::Write, after.trim()),
        "readwrite" => (Access::ReadWrite, after.trim()),
        "deny" => (Access::Deny, after.trim()),
        _ => (Access::ReadWrite, rest),
    };
    if filter.is_empty() {
        return Err("the rule has no topic".into());
    }
    if !valid_filter(filter) {
        return Err(format!(
            "{filter:?} is not a valid topic filter ('+' and '#' only as whole levels, '#' last)"
        ));
    }
    Ok(Rule {
        access,
        filter: filter.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous
topic read public/#

user alice
topic readwrite sensors/#
topic deny sensors/secret/#
topic plain/topic

user bob
topic write bob/out

pattern read v/%u/cmd
pattern readwrite clients/%c/#
";

    fn asker<'a>(username: Option<&'a str>, client_id: &'a str) -> Asker<'a> {
        Asker {
            username,
            client_id,
        }
    }

    #[test]
    fn deny_first_then_grants_then_no_match_is_deny() {
        let acl = Acl::parse(FILE).unwrap();
        let alice = asker(Some("alice"), "a1");
        assert!(acl.allows(&alice, "sensors/temp", Want::Write));
        assert!(acl.allows(&alice, "sensors/temp", Want::Read));
        assert!(!acl.allows(&alice, "sensors/secret/key", Want::Read));
        assert!(
            acl.allows(&alice, "plain/topic", Want::Write),
            "`topic t` is readwrite"
        );
        assert!(
            !acl.allows(&alice, "public/news", Want::Read),
            "anonymous rules are not alice's"
        );
        assert!(!acl.allows(&alice, "elsewhere", Want::Read));
        let bob = asker(Some("bob"), "b1");
        assert!(acl.allows(&bob, "bob/out", Want::Write));
        assert!(!acl.allows(&bob, "bob/out", Want::Read));
        let anonymous = asker(None, "x");
        assert!(acl.allows(&anonymous, "public/news", Want::Read));
        assert!(!acl.allows(&anonymous, "public/news", Want::Write));
    }

    #[test]
    fn patterns_take_ids_literally_and_need_a_user_for_percent_u() {
        let acl = Acl::parse(FILE).unwrap();
        assert!(acl.allows(&asker(Some("truck-7"), "c"), "v/truck-7/cmd", Want::Read));
        assert!(!acl.allows(&asker(Some("truck-7"), "c"), "v/truck-8/cmd", Want::Read));
        assert!(!acl.allows(&asker(None, "c"), "v/%u/cmd", Want::Read));
        assert!(acl.allows(&asker(None, "cid"), "clients/cid/x", Want::Write));
        // A client id "+" would have been a wildcard (CVE-2017-7650); the
        // edge refuses such ids, and here it is a literal level anyway.
        assert!(!acl.allows(&asker(None, "+"), "clients/other/x", Want::Write));
    }

    #[test]
    fn a_subscription_is_granted_when_it_can_receive_something_readable() {
        let acl = Acl::parse(FILE).unwrap();
        let alice = asker(Some("alice"), "a1");
        assert!(acl.allows_subscribe(&alice, "#"), "overlaps sensors/#");
        assert!(acl.allows_subscribe(&alice, "sensors/+"));
        assert!(
            !acl.allows_subscribe(&alice, "sensors/secret/a"),
            "wholly denied"
        );
        assert!(!acl.allows_subscribe(&alice, "other/#"));
        let bob = asker(Some("bob"), "b1");
        assert!(!acl.allows_subscribe(&bob, "bob/out"), "write is not read");
    }

    #[test]
    fn fails_closed_naming_the_line() {
        let cases = [
            ("", "no rule"),
            ("# only comments\n\n", "no rule"),
            ("user alice\n", "no rule"),
            (
                "topic read a/#/b\n",
                "line 1: \"a/#/b\" is not a valid topic filter",
            ),
            ("user\n", "line 1: `user` needs a user name"),
            ("topic read\n", "line 1: the rule has no topic"),
            (
                "user a\ntopci read x\n",
                "line 2: unknown keyword \"topci\"",
            ),
        ];
        for (text, want) in cases {
            let err = Acl::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
