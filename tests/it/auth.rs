//! Who may do what (issue 14), tried as an attacker and as users do: each
//! attack against a gateway with a password file and an ACL file, then a
//! well-behaved client's connect–publish–receive that must still succeed.
//! The clients are the real `mosquitto_pub`/`mosquitto_sub` where a user
//! would use them, and a raw client where the attack is a packet.
//!
//! - [`floods`]: a message flood and every malformed packet, from
//!   authenticated clients;
//! - [`seed_ports`]: the SMQ consumer port, `/put` and `/message` under the
//!   same users and ACL.

mod floods;
mod retained;
mod seed_ports;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fleetgate::auth::passwd::{Entry, PasswordFile, PasswordHash};
use fleetgate::auth::Role;
use fleetgate::metrics::Metrics;
use fleetgate::topics::VehicleId;
use fleetgate::Gateway;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, LastWill, Packet, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;

use crate::common::*;

/// The ACL the attacks meet: Mosquitto's format, as an operator brings it.
const ACL: &str = "\
# alice is a service (from a mosquitto_passwd file): what this file grants
user alice
topic readwrite sensors/#
topic deny sensors/secret/#

# the dashboard may read sensors too, beside the fleet/# its role gives
user dash
topic read sensors/#
";

struct Secured {
    gw: Gateway,
    dir: tempfile::TempDir,
}

impl Secured {
    fn port(&self) -> u16 {
        self.gw.mqtt_addr.port()
    }

    fn count(&self, read: impl Fn(&Metrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        read(&self.gw.metrics).load(Ordering::Relaxed)
    }

    fn passwd(&self) -> std::path::PathBuf {
        self.dir.path().join("passwd")
    }

    fn acl(&self) -> std::path::PathBuf {
        self.dir.path().join("acl")
    }

    /// One series of `/metrics`, read as an operator does: with a token.
    async fn metric(&self, series: &str) -> u64 {
        let (status, body) = http_request_with(
            self.gw.http_addr,
            "GET",
            "/metrics",
            &["Authorization: Bearer root:rootpw"],
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        series_value(&body, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
    }
}

/// Users: alice (service) written by the real `mosquitto_passwd`, as a
/// Mosquitto user brings their file; devices truck-7 and truck-8, a
/// dashboard and an admin added with fleetgate's own entries.
fn write_passwd(path: &Path) {
    require_tool("mosquitto_passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(path)
        .args(["alice", "secret"])
        .status()
        .expect("run mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd failed");
    let text = std::fs::read_to_string(path).unwrap();
    let mut file = PasswordFile::parse(&text).unwrap();
    for (name, password, role) in [
        ("truck-7", "pw7", Role::Device),
        ("truck-8", "pw8", Role::Device),
        ("dash", "dashpw", Role::Dashboard),
        ("root", "rootpw", Role::Admin),
    ] {
        // Few iterations: the tests verify hundreds of logins in debug builds.
        let hash = PasswordHash::new(password.as_bytes(), 1000).unwrap();
        file.insert(name.into(), Entry { hash, role });
    }
    std::fs::write(path, file.render()).unwrap();
}

async fn secured() -> Secured {
    secured_with(|_| {}).await
}

/// [`secured`], with more of the config changed by `edit`.
async fn secured_with(edit: impl FnOnce(&mut fleetgate::Config)) -> Secured {
    let dir = tempfile::tempdir().unwrap();
    write_passwd(&dir.path().join("passwd"));
    std::fs::write(dir.path().join("acl"), ACL).unwrap();
    let mut config = test_config();
    config.auth.password_file = Some(dir.path().join("passwd"));
    config.auth.acl_file = Some(dir.path().join("acl"));
    edit(&mut config);
    Secured {
        gw: gateway_with(config).await,
        dir,
    }
}

/// CONNECT as `client_id` with a login (or none), a will (or none); the
/// CONNACK's code and the client.
async fn connect_as(
    gw: &Gateway,
    client_id: &str,
    login: Option<(&str, &str)>,
    will: Option<&str>,
) -> (ConnectReturnCode, RawClient) {
    let mut c = RawClient::connect(gw.mqtt_addr).await;
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 30;
    if let Some((user, password)) = login {
        connect.set_login(user, password);
    }
    connect.last_will = will.map(|t| LastWill::new(t, "gone", QoS::AtMostOnce, false));
    c.send(Packet::Connect(connect)).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => (ack.code, c),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// The well-behaved path after every attack: alice publishes with
/// `mosquitto_pub`, the dashboard receives with `mosquitto_sub`.
async fn well_behaved_still_works(s: &Secured, tag: &str) {
    let port = s.port();
    let sub = MosquittoSub::start_with(port, "sensors/#", 1, &["-u", "dash", "-P", "dashpw"]);
    let sub = tokio::task::spawn_blocking(move || {
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    let out = mosquitto_pub(
        port,
        &[
            "-u",
            "alice",
            "-P",
            "secret",
            "-t",
            "sensors/ok",
            "-m",
            tag,
            "-q",
            "1",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag = tag.to_owned();
    let line = tokio::task::spawn_blocking(move || sub.await_line(&tag))
        .await
        .unwrap();
    assert!(line.starts_with("sensors/ok"), "{line}");
}

/// Runs `mosquitto_pub` off the runtime: the gateway under test runs on
/// this test's (single) thread.
async fn mosquitto_pub(port: u16, args: &[&str]) -> std::process::Output {
    require_tool("mosquitto_pub");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(&args)
            .output()
            .expect("run mosquitto_pub")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn no_password_and_a_wrong_password_are_refused_with_their_connack_codes() {
    let s = secured().await;
    let port = s.port();
    let out = mosquitto_pub(port, &["-t", "sensors/x", "-m", "anonymous"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not authorised"), "{err}");
    assert_eq!(s.count(|m| &m.connections_refused_total_not_authorized), 1);

    let out = mosquitto_pub(
        port,
        &["-u", "alice", "-P", "Secret", "-t", "sensors/x", "-m", "x"],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad user name or password"), "{err}");
    let (code, _) = connect_as(&s.gw, "c1", Some(("nobody", "secret")), None).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword, "unknown user");
    assert_eq!(s.count(|m| &m.connections_refused_total_bad_credentials), 2);
    well_behaved_still_works(&s, "after-bad-logins").await;
}

#[tokio::test]
async fn a_device_cannot_publish_as_another_vehicle() {
    let s = secured().await;
    let (code, mut truck) = connect_as(&s.gw, "truck-7", Some(("truck-7", "pw7")), None).await;
    assert_eq!(code, ConnectReturnCode::Success);
    // The spoof first, then its own position, on one connection: both are
    // acknowledged in order, so when the second is in the fleet the first
    // has been decided.
    for (pkid, vid) in [(1, "truck-8"), (2, "truck-7")] {
        let mut p = Publish::new(
            format!("v/{vid}/pos"),
            QoS::AtLeastOnce,
            r#"{"lat":52.37,"lon":4.89}"#,
        );
        p.pkid = pkid;
        truck.send(Packet::Publish(p)).await;
        assert!(matches!(truck.recv().await, Some(Packet::PubAck(a)) if a.pkid == pkid));
    }
    let own =
        s.gw.fleet
            .one(VehicleId::parse("truck-7").unwrap())
            .await
            .unwrap();
    assert!(own.is_some(), "its own position is taken");
    let spoofed =
        s.gw.fleet
            .one(VehicleId::parse("truck-8").unwrap())
            .await
            .unwrap();
    assert!(
        spoofed.is_none(),
        "the spoofed position was taken: {spoofed:?}"
    );
    assert_eq!(s.count(|m| &m.acl_denied_total), 1);
    well_behaved_still_works(&s, "after-spoof").await;
}

#[tokio::test]
async fn a_device_may_subscribe_to_its_own_commands_only() {
    let s = secured().await;
    let (_, mut truck) = connect_as(&s.gw, "t7", Some(("truck-7", "pw7")), None).await;
    for (pkid, filter, granted) in [
        (1, "#", false),
        (2, "v/truck-8/cmd", false),
        (3, "fleet/#", false),
        (4, "v/truck-7/cmd", true),
    ] {
        let mut sub = Subscribe::new(filter, QoS::AtMostOnce);
        sub.pkid = pkid;
        truck.send(Packet::Subscribe(sub)).await;
        match truck.recv().await {
            Some(Packet::SubAck(ack)) => {
                let ok = !matches!(
                    ack.return_codes[..],
                    [rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure]
                );
                assert_eq!(ok, granted, "{filter}: {ack:?}");
            }
            other => panic!("{filter}: expected a SUBACK, got {other:?}"),
        }
    }
    well_behaved_still_works(&s, "after-device-subscribes").await;
}

#[tokio::test]
async fn a_will_to_a_forbidden_topic_refuses_the_connect() {
    let s = secured().await;
    let (code, _) = connect_as(
        &s.gw,
        "t7",
        Some(("truck-7", "pw7")),
        Some("v/truck-8/status"),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let (code, _) = connect_as(
        &s.gw,
        "a1",
        Some(("alice", "secret")),
        Some("sensors/secret/x"),
    )
    .await;
    assert_eq!(
        code,
        ConnectReturnCode::NotAuthorized,
        "a deny rule covers the will"
    );
    assert_eq!(s.count(|m| &m.connections_refused_total_will_denied), 2);
    let (code, _) = connect_as(
        &s.gw,
        "t7",
        Some(("truck-7", "pw7")),
        Some("v/truck-7/status"),
    )
    .await;
    assert_eq!(
        code,
        ConnectReturnCode::Success,
        "its own status topic is fine"
    );
    well_behaved_still_works(&s, "after-wills").await;
}

#[tokio::test]
async fn client_ids_that_would_be_wildcards_are_refused() {
    let s = secured().await;
    for id in ["truck+", "#", "a/b", "nul\u{1}"] {
        let (code, _) = connect_as(&s.gw, id, Some(("alice", "secret")), None).await;
        assert_eq!(code, ConnectReturnCode::BadClientId, "{id:?}");
    }
    assert_eq!(s.count(|m| &m.connections_refused_total_bad_client_id), 4);
    well_behaved_still_works(&s, "after-ids").await;
}

/// "Read" is checked per delivered message: a `#` subscription receives
/// only what its client may read.
#[tokio::test]
async fn a_wildcard_subscription_receives_only_what_its_client_may_read() {
    let s = secured().await;
    let port = s.port();
    let sub = MosquittoSub::start_with(port, "#", 1, &["-u", "dash", "-P", "dashpw"]);
    let sub = tokio::task::spawn_blocking(move || {
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    // What the dashboard may not read, then what it may, in that order.
    let root = ["-u", "root", "-P", "rootpw", "-q", "1"];
    for (topic, body) in [("private/x", "hidden-1"), ("v/truck-7/cmd", "hidden-2")] {
        let mut args = root.to_vec();
        args.extend(["-t", topic, "-m", body]);
        assert!(mosquitto_pub(port, &args).await.status.success());
    }
    let mut args = root.to_vec();
    args.extend(["-t", "sensors/a", "-m", "visible"]);
    assert!(mosquitto_pub(port, &args).await.status.success());
    let seen = tokio::task::spawn_blocking(move || sub.lines_until("visible"))
        .await
        .unwrap();
    assert!(
        !seen.iter().any(|l| l.contains("hidden")),
        "the dashboard received what it may not read: {seen:#?}"
    );
    assert!(s.count(|m| &m.acl_read_denied_total) >= 1);
}

#[tokio::test]
async fn a_reload_revokes_a_removed_user_and_its_live_connection() {
    let s = secured().await;
    let (code, mut alice) = connect_as(&s.gw, "a1", Some(("alice", "secret")), None).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let text = std::fs::read_to_string(s.passwd()).unwrap();
    let mut file = PasswordFile::parse(&text).unwrap();
    assert!(file.remove("alice"));
    std::fs::write(s.passwd(), file.render()).unwrap();
    s.gw.auth.reload().expect("reload");
    // Her next packet ends the connection.
    let mut p = Publish::new("sensors/x", QoS::AtLeastOnce, "after revocation");
    p.pkid = 1;
    alice.send(Packet::Publish(p)).await;
    assert!(
        alice.recv().await.is_none(),
        "the revoked connection stays open"
    );
    assert_eq!(s.count(|m| &m.connections_closed_revoked_total), 1);
    let (code, _) = connect_as(&s.gw, "a2", Some(("alice", "secret")), None).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);

    // A bad file on reload keeps the tables in force.
    std::fs::write(s.passwd(), "broken line without a hash\n").unwrap();
    assert!(s.gw.auth.reload().is_err());
    let (code, _) = connect_as(&s.gw, "d1", Some(("dash", "dashpw")), None).await;
    assert_eq!(code, ConnectReturnCode::Success);
}

#[tokio::test]
async fn an_empty_or_invalid_security_file_refuses_to_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("passwd", "", "has no user"),
        (
            "passwd",
            "alice:\n",
            "line 1: user \"alice\" has no password hash",
        ),
        ("acl", "# nothing\n", "no rule"),
        ("acl", "user a\ntopic read a/#/b\n", "line 2"),
    ];
    for (which, text, want) in cases {
        let path = dir.path().join(which);
        std::fs::write(&path, text).unwrap();
        let mut config = test_config();
        match which {
            "passwd" => config.auth.password_file = Some(path),
            _ => config.auth.acl_file = Some(path),
        }
        config.data_dir.0 = dir.path().join("data");
        let listeners = fleetgate::Listeners::loopback().await.unwrap();
        let err = match fleetgate::start(config, listeners).await {
            Ok(_) => panic!("{which} {text:?}: the gateway started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{which} {text:?}: {err}");
    }
    let mut config = test_config();
    config.auth.password_file = Some(dir.path().join("missing"));
    let listeners = fleetgate::Listeners::loopback().await.unwrap();
    assert!(
        fleetgate::start(config, listeners).await.is_err(),
        "an unreadable file"
    );
}

#[tokio::test]
async fn logins_reuse_a_verified_password_and_never_block_the_runtime() {
    let s = secured().await;
    let metrics: Arc<Metrics> = s.gw.metrics.clone();
    for i in 0..5 {
        let (code, _) = connect_as(&s.gw, &format!("d{i}"), Some(("dash", "dashpw")), None).await;
        assert_eq!(code, ConnectReturnCode::Success);
    }
    assert_eq!(metrics.auth_verifications_total.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.auth_cache_hits_total.load(Ordering::Relaxed), 4);
    // A wrong password is never answered from the cache.
    let (code, _) = connect_as(&s.gw, "d9", Some(("dash", "wrong")), None).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(metrics.auth_verifications_total.load(Ordering::Relaxed), 2);
}

/// The operator's path: `fleetgate passwd add` (password on stdin), the
/// gateway lets the user in with its role; `remove` and a reload lock it out.
#[tokio::test]
async fn users_managed_with_fleetgate_passwd_log_in_with_their_role() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let passwd = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fleetgate"))
            .arg("passwd")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run fleetgate passwd");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let f = file.to_str().unwrap();
    passwd(
        &[
            "add",
            f,
            "truck-9",
            "--role",
            "device",
            "--iterations",
            "10000",
        ],
        "pw9\n",
    );
    passwd(
        &["add", f, "ops", "--role", "admin", "--iterations", "10000"],
        "opspw\n",
    );
    let listed = passwd(&["list", f], "");
    assert!(listed.contains("truck-9\tdevice"), "{listed}");
    assert!(listed.contains("ops\tadmin"), "{listed}");
    assert!(
        !listed.contains("$7$"),
        "list must not print hashes: {listed}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o007,
            0,
            "the password file is readable by others: {mode:o}"
        );
        // An operator's chmod survives the next change.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        passwd(&["add", f, "spare", "--iterations", "10000"], "sparepw\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the file's mode was not kept: {mode:o}"
        );
    }

    let mut config = test_config();
    config.auth.password_file = Some(file.clone());
    let gw = gateway_with(config).await;
    let (code, _) = connect_as(
        &gw,
        "t9",
        Some(("truck-9", "pw9")),
        Some("v/truck-9/status"),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success);
    let (code, _) = connect_as(&gw, "t9", Some(("truck-9", "pw9")), Some("v/other/status")).await;
    assert_eq!(
        code,
        ConnectReturnCode::NotAuthorized,
        "the device role holds without an ACL"
    );

    passwd(&["remove", f, "truck-9"], "");
    gw.auth.reload().unwrap();
    let (code, _) = connect_as(&gw, "t9", Some(("truck-9", "pw9")), None).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let (code, _) = connect_as(&gw, "o", Some(("ops", "opspw")), None).await;
    assert_eq!(code, ConnectReturnCode::Success);
}

/// HTTP with a password file: reads need a dashboard token, writes a
/// service or admin token; the page and /healthz stay open; browsers pass
/// the token in the WebSocket's query.
#[tokio::test]
async fn http_reads_need_a_dashboard_token_and_writes_a_service_token() {
    let s = secured().await;
    let http = s.gw.http_addr;
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let (status, body) = http_request_with(http, "GET", "/vehicles", &[], None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) =
        http_request_with(http, "GET", "/vehicles", &[&bearer("dash:wrong")], None).await;
    assert_eq!(status, 401);
    let (status, _) =
        http_request_with(http, "GET", "/vehicles", &[&bearer("truck-7:pw7")], None).await;
    assert_eq!(status, 403, "a device has no HTTP access");
    let (status, body) =
        http_request_with(http, "GET", "/vehicles", &[&bearer("dash:dashpw")], None).await;
    assert_eq!(status, 200, "{body}");
    let package = r#"{"from":"A","to":"B","vehicleId":"truck-7"}"#;
    let (status, body) = http_request_with(
        http,
        "POST",
        "/packages",
        &[&bearer("dash:dashpw")],
        Some(package),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = http_request_with(
        http,
        "POST",
        "/packages",
        &[&bearer("root:rootpw")],
        Some(package),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    for open in ["/healthz", "/"] {
        let (status, _) = http_request_with(http, "GET", open, &[], None).await;
        assert_eq!(status, 200, "{open}");
    }
    assert_eq!(s.count(|m| &m.http_refused_total_no_token), 1);
    assert_eq!(s.count(|m| &m.http_refused_total_bad_token), 1);
    assert_eq!(s.count(|m| &m.http_refused_total_forbidden), 2);

    // A browser's WebSocket: no header, the token in the query.
    let url = format!("ws://{http}/ws");
    assert!(
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .is_err(),
        "/ws without a token"
    );
    let mut ws = ws_connect(http, "/ws?access_token=dash:dashpw").await;
    let first = next_json(&mut ws).await;
    assert!(first.is_object(), "{first}");
}
