//! TLS (issue 14), tried as users and attackers do: the real
//! `mosquitto_pub`/`mosquitto_sub` over the MQTT TLS port with the
//! operator's CA, devices identified by their client certificates, HTTPS
//! with a TLS client, a handshake that stalls, a plain client on a TLS
//! port, and a certificate swapped by a reload. The certificates are made
//! here with rcgen; no key material lives in the repository.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fleetgate::auth::passwd::{Entry, PasswordFile, PasswordHash};
use fleetgate::auth::Role;
use fleetgate::metrics::Metrics;
use fleetgate::topics::VehicleId;
use fleetgate::Gateway;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// A CA and the files a test hands to the gateway and to its clients.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate for `names` (DNS names or IPs) with subject CN `cn`,
    /// written as `<file>.pem` and `<file>.key`.
    fn issue(&self, file: &str, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path(&format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    fn server(&self) {
        self.issue(
            "server",
            "fleetgate",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
    }

    fn client(&self, file: &str, cn: &str) {
        self.issue(file, cn, &[], ExtendedKeyUsagePurpose::ClientAuth);
    }
}

/// A gateway serving MQTT over TLS with `pki`'s server certificate (HTTP
/// stays plain, for `/metrics`, unless `tweak` turns HTTPS on).
async fn tls_gateway(pki: &Pki, tweak: impl FnOnce(&mut fleetgate::Config)) -> Gateway {
    pki.server();
    let mut config = test_config();
    config.tls.mqtt_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tls.cert_file = Some(pki.path("server.pem"));
    config.tls.key_file = Some(pki.path("server.key"));
    tweak(&mut config);
    gateway_with(config).await
}

fn tls_port(gw: &Gateway) -> u16 {
    gw.mqtt_tls_addr
        .expect("the MQTT TLS port is served")
        .port()
}

/// `mosquitto_pub` over TLS with the gateway's CA, plus `args` (split at
/// spaces: the tests' paths have none).
async fn tls_pub(gw: &Gateway, pki: &Pki, args: &str) -> std::process::Output {
    require_tool("mosquitto_pub");
    let mut all: Vec<String> = vec![
        "-h".into(),
        "localhost".into(),
        "-p".into(),
        tls_port(gw).to_string(),
        "--cafile".into(),
        pki.path("ca.pem").display().to_string(),
    ];
    all.extend(args.split_whitespace().map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("mosquitto_pub")
            .args(&all)
            .output()
            .expect("run mosquitto_pub")
    })
    .await
    .unwrap()
}

fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Does the fleet know vehicle `id` (has a position of it been ingested)?
async fn knows(gw: &Gateway, id: &str) -> bool {
    let id = VehicleId::parse(id).unwrap();
    gw.fleet.one(id).await.unwrap().is_some()
}

/// A position payload in a file, for `mosquitto_pub -f`.
fn position_file(pki: &Pki) -> String {
    let path = pki.path("position.bin");
    std::fs::write(&path, position(1)).unwrap();
    path.display().to_string()
}

/// `--cert` and `--key` for the client certificate `file`.
fn client_cert_args(pki: &Pki, file: &str) -> (String, String) {
    (
        pki.path(&format!("{file}.pem")).display().to_string(),
        pki.path(&format!("{file}.key")).display().to_string(),
    )
}

#[tokio::test]
async fn mosquitto_clients_publish_and_subscribe_over_tls() {
    let pki = Pki::new("plain");
    let gw = tls_gateway(&pki, |_| {}).await;
    let ca = pki.path("ca.pem").display().to_string();
    // mosquitto_sub's host must match the certificate: `localhost`.
    let extra = ["--cafile", ca.as_str(), "-h", "localhost"];
    let sub = MosquittoSub::start_with(tls_port(&gw), "sensors/#", 1, &extra);
    let sub = tokio::task::spawn_blocking(move || {
        sub.await_line("SUBACK");
        sub
    })
    .await
    .unwrap();
    let out = tls_pub(&gw, &pki, "-t sensors/t1 -m over-tls -q 1").await;
    succeeded(&out);
    let line = tokio::task::spawn_blocking(move || sub.await_line("over-tls"))
        .await
        .unwrap();
    assert!(line.contains("sensors/t1"), "{line}");
    assert!(metric(&gw, "fleetgate_tls_handshakes_total").await >= 2);

    // A vehicle's position over TLS reaches the fleet like any other.
    let file = position_file(&pki);
    let out = tls_pub(&gw, &pki, &format!("-t v/tls-truck/pos -f {file} -q 1")).await;
    succeeded(&out);
    assert!(
        knows(&gw, "tls-truck").await,
        "the position sent over TLS was not ingested"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_gets_nothing() {
    let pki = Pki::new("trusted");
    let gw = tls_gateway(&pki, |_| {}).await;
    let other = Pki::new("other");
    let ca = other.path("ca.pem").display().to_string();
    let out = tls_pub(&gw, &pki, &format!("--cafile {ca} -t sensors/x -m no")).await;
    assert!(
        !out.status.success(),
        "a client trusting another CA connected"
    );
    await_metric(
        &gw,
        "fleetgate_tls_refused_total{reason=\"handshake_failed\"}",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_in_time_and_blocks_nobody() {
    let pki = Pki::new("stall");
    let gw = tls_gateway(&pki, |c| c.tls.handshake_timeout_ms = 300).await;
    let addr = gw.mqtt_tls_addr.unwrap();
    // Silent after TCP connect, and one that sends half a ClientHello.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // Meanwhile a well-behaved client is served at once.
    let out = tls_pub(&gw, &pki, "-t sensors/ok -m fine -q 1").await;
    succeeded(&out);
    // Both stalled connections are closed by the gateway (EOF, not our timeout).
    for stream in [&mut silent, &mut half] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("the gateway closes a stalled handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_eq!(
        await_metric(
            &gw,
            "fleetgate_tls_refused_total{reason=\"handshake_timeout\"}",
            2
        )
        .await,
        2
    );
}

#[tokio::test]
async fn a_plain_mqtt_client_on_the_tls_port_is_refused_and_counted() {
    let pki = Pki::new("plain-on-tls");
    let gw = tls_gateway(&pki, |_| {}).await;
    require_tool("mosquitto_pub");
    let port = tls_port(&gw);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", "sensors/x", "-m", "plain"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    await_metric(
        &gw,
        "fleetgate_tls_refused_total{reason=\"handshake_failed\"}",
        1,
    )
    .await;
    // The plain port is still plain.
    let port = gw.mqtt_addr.port();
    let plain = tokio::task::spawn_blocking(move || mosquitto_pub_text(port, "sensors/y", "plain"));
    assert!(plain.await.unwrap());
}

/// Users for the certificate tests: truck-7 has a password and the device
/// role; a certificate for a name the file does not list is a device too.
fn write_passwd(path: &Path) {
    let mut file = PasswordFile::default();
    for (name, password, role) in [
        ("truck-7", "pw7", Role::Device),
        ("root", "rootpw", Role::Admin),
    ] {
        let hash = PasswordHash::new(password.as_bytes(), 1000).unwrap();
        file.insert(name.into(), Entry { hash, role });
    }
    std::fs::write(path, file.render()).unwrap();
}

#[tokio::test]
async fn a_client_certificate_is_the_identity_and_its_role_is_enforced() {
    let pki = Pki::new("devices");
    write_passwd(&pki.path("passwd"));
    pki.client("truck-9", "truck-9");
    let gw = tls_gateway(&pki, |c| {
        c.auth.password_file = Some(pki.path("passwd"));
        c.tls.client_ca_file = Some(pki.path("ca.pem"));
        c.tls.require_client_certificate = true;
        c.tls.use_identity_as_username = true;
    })
    .await;
    let file = position_file(&pki);
    let (cert, key) = client_cert_args(&pki, "truck-9");
    let with_cert = |topic: &str| format!("--cert {cert} --key {key} -t {topic} -f {file} -q 1");
    // Its own topic, with no password: the certificate is its login.
    let out = tls_pub(&gw, &pki, &with_cert("v/truck-9/pos")).await;
    succeeded(&out);
    assert!(
        knows(&gw, "truck-9").await,
        "truck-9's own position was refused"
    );

    // Another vehicle's topic: acked (3.1.1 has no negative PUBACK), dropped, counted.
    // Its /metrics needs a token here: read the counter straight.
    let denied_before = gw.metrics.acl_denied_total.load(Ordering::Relaxed);
    let out = tls_pub(&gw, &pki, &with_cert("v/truck-7/pos")).await;
    succeeded(&out);
    await_count(&gw, |m| &m.acl_denied_total, denied_before + 1).await;
    assert!(
        !knows(&gw, "truck-7").await,
        "truck-9's certificate spoofed truck-7"
    );

    // The user name in the CONNECT does not override the certificate.
    let args = format!("{} -u root -P wrong", with_cert("v/truck-7/pos"));
    let out = tls_pub(&gw, &pki, &args).await;
    succeeded(&out);
    await_count(&gw, |m| &m.acl_denied_total, denied_before + 2).await;

    // No certificate: refused in the handshake, even with a good password.
    let out = tls_pub(&gw, &pki, "-u truck-7 -P pw7 -t v/truck-7/pos -m x").await;
    assert!(
        !out.status.success(),
        "a client without a certificate connected"
    );
    await_count(&gw, |m| &m.tls_refused_total_handshake_failed, 1).await;
}

#[tokio::test]
async fn without_identity_a_certificate_holder_still_needs_its_password() {
    let pki = Pki::new("optional");
    write_passwd(&pki.path("passwd"));
    pki.client("truck-7", "truck-7");
    let gw = tls_gateway(&pki, |c| {
        c.auth.password_file = Some(pki.path("passwd"));
        c.tls.client_ca_file = Some(pki.path("ca.pem"));
    })
    .await;
    let (cert, key) = client_cert_args(&pki, "truck-7");
    let out = tls_pub(
        &gw,
        &pki,
        &format!("--cert {cert} --key {key} -t v/truck-7/pos -m x"),
    )
    .await;
    assert!(
        !out.status.success(),
        "a certificate without use_identity_as_username logged in"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authorised"));
    // Optional client certificates: a client without one, with its password, is in.
    let file = position_file(&pki);
    let out = tls_pub(
        &gw,
        &pki,
        &format!("-u truck-7 -P pw7 -t v/truck-7/pos -f {file} -q 1"),
    )
    .await;
    succeeded(&out);
}

/// Waits until a counter read straight from the gateway (its `/metrics` is
/// HTTPS here) reaches `at_least`.
async fn await_count(gw: &Gateway, read: impl Fn(&Metrics) -> &AtomicU64, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = read(&gw.metrics).load(Ordering::Relaxed);
        if v >= at_least {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counter stayed at {v}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS connection to `addr` from a client trusting `ca_pem`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    ca_pem: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A TLS client trusting `ca_pem`: the response to `GET path` over HTTPS.
async fn https_get(
    addr: std::net::SocketAddr,
    ca_pem: &Path,
    path: &str,
) -> std::io::Result<String> {
    let mut tls = tls_connect(addr, ca_pem).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn https_serves_the_api_and_a_plain_request_gets_no_answer() {
    let pki = Pki::new("https");
    let gw = tls_gateway(&pki, |c| c.tls.https = true).await;
    let response = https_get(gw.http_addr, &pki.path("ca.pem"), "/healthz")
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let response = https_get(gw.http_addr, &pki.path("ca.pem"), "/vehicles")
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Plain HTTP to the HTTPS port: no HTTP answer, the failure counted.
    let mut plain = TcpStream::connect(gw.http_addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut got)).await;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
    await_count(&gw, |m| &m.tls_refused_total_handshake_failed, 1).await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let pki = Pki::new("first");
    let gw = tls_gateway(&pki, |c| c.tls.https = true).await;
    let tls = gw.tls.clone().expect("TLS is on");
    assert!(https_get(gw.http_addr, &pki.path("ca.pem"), "/healthz")
        .await
        .is_ok());

    // A bad key file: the reload is refused and the old certificate stays.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    let err = tls.reload().expect_err("a bad key file is refused");
    assert!(err.to_string().contains("server.key"), "{err}");
    assert!(https_get(gw.http_addr, &pki.path("ca.pem"), "/healthz")
        .await
        .is_ok());

    // A certificate from a new CA in the same files: new handshakes use it.
    let next = Pki::new("second");
    next.server();
    for file in ["server.pem", "server.key"] {
        std::fs::copy(next.path(file), pki.path(file)).unwrap();
    }
    tls.reload().expect("the new certificate loads");
    assert!(https_get(gw.http_addr, &next.path("ca.pem"), "/healthz")
        .await
        .is_ok());
    assert!(https_get(gw.http_addr, &pki.path("ca.pem"), "/healthz")
        .await
        .is_err());
    assert_eq!(gw.metrics.tls_reloads_total.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_missing_or_empty_certificate_file_refuses_to_start_naming_it() {
    let pki = Pki::new("broken");
    std::fs::write(pki.path("empty.pem"), "").unwrap();
    for (cert, needle) in [
        ("missing.pem", "missing.pem"),
        ("empty.pem", "holds no certificate"),
    ] {
        let mut config = test_config();
        config.tls.https = true;
        config.tls.cert_file = Some(pki.path(cert));
        config.tls.key_file = Some(pki.path("missing.key"));
        config.data_dir.0 = pki.path("data");
        let listeners = fleetgate::Listeners::loopback().await.unwrap();
        let err = match fleetgate::start(config, listeners).await {
            Ok(_) => panic!("started with {cert}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{err}");
    }
}

#[tokio::test]
async fn past_tls_max_connections_only_the_one_over_is_refused() {
    let pki = Pki::new("limit");
    let gw = tls_gateway(&pki, |c| {
        c.tls.max_connections = std::num::NonZeroUsize::MIN;
    })
    .await;
    let addr = gw.mqtt_tls_addr.unwrap();
    let held = tls_connect(addr, &pki.path("ca.pem")).await.unwrap();
    await_metric(&gw, "fleetgate_tls_handshakes_total", 1).await;
    // The one over the limit is closed before its handshake, and counted.
    let mut over = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), over.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    await_metric(&gw, "fleetgate_tls_refused_total{reason=\"limit\"}", 1).await;
    // When the place frees, the next client is served: no lockout.
    drop(held);
    await_metric_at_most(&gw, "fleetgate_tls_connections", 0).await;
    let out = tls_pub(&gw, &pki, "-t sensors/after -m in -q 1").await;
    succeeded(&out);
}
