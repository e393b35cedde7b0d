//! MQTT topic names and filters: checks, matching, and the relations the
//! pub/sub proxy (`crate::pubsub`) and the ACL (`crate::auth`) rely on.
//!
//! In: a topic or filter string. Out: whether it is valid, whether a filter
//! matches a topic, and the relations between two filters that the link's
//! subscriptions are computed from ([`overlaps`], [`contains`], [`join`]).
//! Bound: no state; each function walks its inputs once.
//!
//! Why the relations: rumqttd keeps one log per filter and forwards a
//! publish once for every filter of a link that matches it, without saying
//! which. The proxy's one link therefore never holds two filters that
//! overlap: overlapping filters share one **cover**, a filter that
//! contains them all ([`join`]), and the hub routes each forwarded publish
//! to the connections whose own filters match its topic.

/// A topic's or filter's longest name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 200;

/// A topic to publish to: 1 to [`MAX_TOPIC_BYTES`] bytes, no `+`, `#` or
/// NUL. (Whether it may be published to is the ACL's business.)
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES && !topic.contains(['+', '#', '\0'])
}

/// A filter to subscribe to: 1 to [`MAX_TOPIC_BYTES`] bytes, no NUL, `+`
/// only as a whole level, `#` only as the whole last level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_BYTES || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let ok = match level {
            "#" => last,
            "+" => true,
            l => !l.contains(['+', '#']),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Does `filter` match `topic`? As MQTT 3.1.1 §4.7: `+` is one level, `#`
/// the rest (the parent level included), and a wildcard in the first level
/// does not match a topic that starts with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Is there a topic both filters match?
pub fn overlaps(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does `a` match every topic `b` matches?
pub fn contains(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(q)) if q != "#" => {}
            (Some(p), Some(q)) if p == q && q != "+" && q != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A filter that contains both `a` and `b`: their common levels, `+` where
/// they differ, `#` from where one ends or has `#`.
pub fn join(a: &str, b: &str) -> String {
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    let mut out: Vec<&str> = Vec::new();
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => {
                out.push("#");
                break;
            }
            (Some(p), Some(q)) if p == q => out.push(p),
            (Some(_), Some(_)) => out.push("+"),
            (None, None) => break,
            _ => {
                out.push("#");
                break;
            }
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
        assert!(matches("a/+", "a/b"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "fleet/t1/position"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("+/+/position", "fleet/t1/position"));
    }

    #[test]
    fn only_whole_level_wildcards_are_valid() {
        for ok in ["a", "a/+/c", "a/#", "#", "+", "fleet/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/c", "a+/b", "a/b#", "a\0"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
        assert!(valid_topic("booked"));
        assert!(!valid_topic("a/+"));
        assert!(!valid_topic(&"x".repeat(MAX_TOPIC_BYTES + 1)));
    }

    #[test]
    fn overlap_and_containment() {
        assert!(overlaps("a/+", "+/b"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("a", "a/b"));
        assert!(!overlaps("a/+", "b/+"));
        assert!(contains("a/#", "a/+/c"));
        assert!(contains("+/b", "a/b"));
        assert!(!contains("a/b", "a/+"));
        assert!(!contains("a/+", "a/#"));
    }

    #[test]
    fn a_join_contains_both_and_is_a_valid_filter() {
        let filters = ["a", "a/b", "a/+", "+/b", "a/#", "#", "a/b/c", "x/+/z", "+"];
        for a in filters {
            for b in filters {
                let j = join(a, b);
                assert!(valid_filter(&j), "{a} ∨ {b} = {j}");
                assert!(contains(&j, a) && contains(&j, b), "{a} ∨ {b} = {j}");
            }
        }
        assert_eq!(join("a/+", "+/b"), "+/+");
        assert_eq!(join("a", "a/b"), "a/#");
        assert_eq!(join("a/b", "a/b"), "a/b");
    }
}
