//! `auth.check_retain_source`: a retained message speaks for its publisher
//! for as long as it is kept; with the option on, a publisher whose right
//! to write the topic was taken away (a reload) no longer speaks through
//! its retained messages, as Mosquitto's `check_retain_source` does.

use super::{mosquitto_pub, secured_with, Secured, ACL};
use crate::common::*;

/// alice publishes a retained message, then loses the right to write its
/// topic (a new ACL, reloaded); what a new subscriber (the dashboard) gets
/// before a marker published after its SUBACK.
async fn retained_seen_after_revocation(check_retain_source: bool) -> (Secured, Vec<String>) {
    let s = secured_with(|c| c.auth.check_retain_source = check_retain_source).await;
    let port = s.port();
    let login = ["-u", "alice", "-P", "secret"];
    let publish = [
        &login[..],
        &["-t", "sensors/r", "-m", "from-alice", "-r", "-q", "1"],
    ]
    .concat();
    let out = mosquitto_pub(port, &publish).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let revoked = ACL.replace("topic readwrite sensors/#", "topic read sensors/#");
    assert_ne!(revoked, ACL, "the ACL no longer grants alice sensors/#");
    std::fs::write(s.dir.path().join("acl"), revoked).unwrap();
    s.gw.auth.reload().expect("reload");

    let sub = MosquittoSub::start_with(port, "sensors/#", 1, &["-u", "dash", "-P", "dashpw"]);
    let sub = tokio::task::spawn_blocking(move || {
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    let marker = [
        "-u",
        "root",
        "-P",
        "rootpw",
        "-t",
        "sensors/marker",
        "-m",
        "after",
        "-q",
        "1",
    ];
    let out = mosquitto_pub(port, &marker).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = tokio::task::spawn_blocking(move || sub.lines_until("after"))
        .await
        .unwrap();
    (s, seen)
}

#[tokio::test]
async fn a_revoked_publishers_retained_message_is_no_longer_delivered() {
    let (s, seen) = retained_seen_after_revocation(true).await;
    assert!(
        !seen.iter().any(|l| l.contains("from-alice")),
        "a retained message of a publisher who lost the right was delivered: {seen:#?}"
    );
    assert_eq!(s.count(|m| &m.retained_source_denied_total), 1);
}

#[tokio::test]
async fn without_check_retain_source_the_reader_alone_decides() {
    let (s, seen) = retained_seen_after_revocation(false).await;
    assert!(
        seen.iter().any(|l| l.contains("sensors/r from-alice")),
        "the dashboard may read sensors/#, so the retained message is its: {seen:#?}"
    );
    assert_eq!(s.count(|m| &m.retained_source_denied_total), 0);
}
