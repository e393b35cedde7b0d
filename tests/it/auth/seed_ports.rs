//! The seeds' ports under the password file and the ACL: the SMQ consumer
//! port (`AUTH <user> <password>` first, `SUB` as an MQTT read of its
//! topic), `/put` (an MQTT write), and `/message` (publishes as MQTT
//! writes, subscriptions as MQTT SUBSCRIBEs, deliveries as reads) — and,
//! without a password file, the seed's clients as before.

use serde_json::Value;

use super::{mosquitto_pub, secured, Secured};
use crate::common::*;

fn smq_refused(reason: &str) -> String {
    format!("fleetgate_smq_refused_total{{reason=\"{reason}\"}}")
}

async fn consumer(s: &Secured) -> SeedClient {
    SeedClient::connect(s.gw.smq_addr.expect("smq is on")).await
}

/// `/put?topic=…` with a token (`user:password`): the status.
async fn put_as(s: &Secured, method: &str, token: &str, topic: &str, body: &str) -> u16 {
    let head = format!(
        "{method} /put?topic={topic} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {}",
        body.len()
    );
    let reply = http_exchange(s.gw.http_addr, &head, body.as_bytes()).await;
    if reply.status != 200 {
        assert!(
            reply.json()["error"].is_string(),
            "{method} /put: {reply:?}"
        );
    }
    reply.status
}

#[tokio::test]
async fn the_smq_port_needs_a_login_first_and_refuses_a_wrong_one() {
    let s = secured().await;
    let mut c = consumer(&s).await;
    c.subscribe("sensors/a", "ch").await;
    assert_eq!(c.read_error().await, "E_AUTH_FIRST");
    assert!(c.closed().await, "a consumer without AUTH stays connected");
    for (user, password) in [("alice", "Secret"), ("mallory", "secret")] {
        let mut c = consumer(&s).await;
        c.write_command("AUTH", &[user, password]).await;
        assert_eq!(c.read_error().await, "E_AUTH_FAILED", "{user}");
        assert!(c.closed().await, "{user}: still connected");
    }
    assert_eq!(s.metric(&smq_refused("auth_first")).await, 1);
    assert_eq!(s.metric(&smq_refused("bad_credentials")).await, 2);
    // A user's right login, then what it may read works as in the seed.
    let mut c = consumer(&s).await;
    c.write_command("AUTH", &["alice", "secret"]).await;
    assert_eq!(c.read_error().await, "OK");
    c.subscribe("sensors/after-logins", "ch").await;
    assert_eq!(
        put_as(&s, "POST", "alice:secret", "sensors/after-logins", "m1").await,
        200
    );
    let msg = c.get().await;
    assert_eq!(msg.text(), "m1");
    c.finish(&msg).await;
}

/// An SMQ topic is the broker's MQTT topic of that name, so `SUB` is an
/// MQTT read of it and `/put` an MQTT write, for the same user, role and
/// ACL; a reload that takes the right away ends the consumer at its next
/// `GET`.
#[tokio::test]
async fn smq_sub_and_put_are_checked_as_mqtt_reads_and_writes_of_their_topic() {
    let s = secured().await;
    let mut c = consumer(&s).await;
    c.write_command("AUTH", &["alice", "secret"]).await;
    assert_eq!(c.read_error().await, "OK");
    // A deny rule, a topic the ACL does not grant, a vehicle's commands.
    for topic in ["sensors/secret/x", "private/x", "v/truck-7/cmd"] {
        c.subscribe(topic, "ch").await;
        assert_eq!(c.read_error().await, "E_UNAUTHORIZED", "SUB {topic}");
    }
    assert_eq!(s.metric(&smq_refused("not_authorized")).await, 3);
    // Still connected, and may SUB to what it may read.
    c.subscribe("sensors/a", "ch").await;

    // /put: the ACL as an MQTT publish; a dashboard publishes nothing, by
    // POST (its role) or by GET (the ACL).
    let acl_before = s.metric("fleetgate_acl_denied_total").await;
    for (method, token, topic) in [
        ("POST", "alice:secret", "private/x"),
        ("POST", "alice:secret", "sensors/secret/x"),
        ("GET", "dash:dashpw", "sensors/a"),
        ("POST", "dash:dashpw", "sensors/a"),
    ] {
        let status = put_as(&s, method, token, topic, "no").await;
        assert_eq!(status, 403, "{method} /put?topic={topic} as {token}");
    }
    assert_eq!(
        s.metric("fleetgate_acl_denied_total").await,
        acl_before + 3,
        "the ACL's refusals of /put"
    );
    assert_eq!(
        put_as(&s, "POST", "alice:secret", "sensors/a", "from-put").await,
        200
    );
    let msg = c.get().await;
    assert_eq!(msg.text(), "from-put", "nothing refused was queued");
    c.finish(&msg).await;
    // An MQTT publish to the topic by the same user reaches the channel.
    let out = mosquitto_pub(
        s.port(),
        &[
            "-u",
            "alice",
            "-P",
            "secret",
            "-t",
            "sensors/a",
            "-m",
            "from-mqtt",
            "-q",
            "1",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let msg = c.get().await;
    assert_eq!(msg.text(), "from-mqtt");
    c.finish(&msg).await;

    // The ACL loses alice's sensors/# (SIGHUP): her next GET ends her.
    std::fs::write(s.acl(), "user alice\ntopic read other/#\n").unwrap();
    s.gw.auth.reload().expect("reload");
    c.write_command("GET", &[]).await;
    assert_eq!(c.read_error().await, "E_UNAUTHORIZED");
    assert!(
        c.closed().await,
        "a consumer that lost its right stays connected"
    );
    assert_eq!(s.metric(&smq_refused("not_authorized")).await, 4);
}

/// Without a password file the seed's consumers work as they did, and an
/// `AUTH` is answered `OK` without a check, as an MQTT login is then.
#[tokio::test]
async fn without_a_password_file_the_smq_port_needs_no_login() {
    let gw = gateway().await;
    let smq = gw.smq_addr.expect("smq is on");
    let mut seed = SeedClient::connect(smq).await;
    seed.subscribe("plain", "ch").await;
    let mut with_login = SeedClient::connect(smq).await;
    with_login
        .write_command("AUTH", &["anyone", "anything"])
        .await;
    assert_eq!(with_login.read_error().await, "OK");
    with_login.subscribe("plain", "ch2").await;
    put_ok(&gw, "plain", "hello").await;
    for c in [&mut seed, &mut with_login] {
        let msg = c.get().await;
        assert_eq!(msg.text(), "hello");
        c.finish(&msg).await;
    }
}

fn is_error(frame: &Value, status: u64) -> bool {
    frame["action"] == "error" && frame["status"] == status
}

/// `/message` is its token's user's: a publish is an MQTT write of its
/// topic, a subscribe an MQTT SUBSCRIBE, and each message delivered an
/// MQTT read, so a `#` subscription gets only what the user may read.
#[tokio::test]
async fn message_socket_publishes_subscribes_and_reads_as_its_tokens_user() {
    let s = secured().await;
    let http = s.gw.http_addr;
    let url = format!("ws://{http}/message");
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "/message without a token"
    );
    let acl_before = s.metric("fleetgate_acl_denied_total").await;
    // A dashboard may read (fleet/# and the ACL's sensors/#), not publish.
    let mut dash = SeedPubSub::connect_at(http, "/message?access_token=dash:dashpw").await;
    dash.subscribe("#").await;
    dash.publish("sensors/a", "from-dash").await;
    let refused = dash.next().await;
    assert!(is_error(&refused, 403), "{refused}");
    // A service: what the ACL grants.
    let mut alice = SeedPubSub::connect_at(http, "/message?access_token=alice:secret").await;
    alice.subscribe("private/#").await;
    let refused = alice.next().await;
    assert!(is_error(&refused, 403), "subscribe private/#: {refused}");
    for topic in ["sensors/secret/x", "private/x"] {
        alice.publish(topic, "hidden-by-alice").await;
        let refused = alice.next().await;
        assert!(is_error(&refused, 403), "publish {topic}: {refused}");
    }
    alice.subscribe("sensors/#").await;
    // Through the same link: once it is back, every subscription is in.
    alice.publish("sensors/sync", "sync").await;
    assert_eq!(alice.next().await, publish_frame("sensors/sync", "sync"));
    assert_eq!(dash.next().await, publish_frame("sensors/sync", "sync"));
    assert_eq!(s.metric("fleetgate_acl_denied_total").await, acl_before + 4);

    // What neither may read, then what each may: an admin over MQTT.
    let root = ["-u", "root", "-P", "rootpw", "-q", "1"];
    for (topic, body) in [
        ("private/x", "hidden-1"),
        ("v/truck-7/cmd", "hidden-2"),
        ("sensors/secret/y", "hidden-3"),
        ("sensors/b", "visible"),
    ] {
        let mut args = root.to_vec();
        args.extend(["-t", topic, "-m", body]);
        assert!(mosquitto_pub(s.port(), &args).await.status.success());
    }
    for (who, ws) in [("dash", &mut dash), ("alice", &mut alice)] {
        loop {
            let frame = ws.next().await;
            let message = frame["message"].as_str().unwrap_or_default().to_owned();
            if who == "dash" && message == "hidden-3" {
                // The dashboard's ACL reads all of sensors/#.
                continue;
            }
            assert!(!message.starts_with("hidden"), "{who} received {frame}");
            if message == "visible" {
                break;
            }
        }
    }
    assert!(s.metric("fleetgate_acl_read_denied_total").await >= 3);
}
