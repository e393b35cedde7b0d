//! TLS for the MQTT TLS port and for HTTPS: rustls behind tokio-rustls.
//!
//! In: the `[tls]` files (certificate chain, key, client CAs) and TCP
//! connections accepted on a TLS listener. Out: each connection's TLS
//! stream once its handshake has finished within
//! `tls.handshake_timeout_ms`, with the identity of its client certificate
//! when one was verified; or nothing, counted in
//! `tls_refused_total{reason}` (`limit`, `handshake_timeout`,
//! `handshake_failed`).
//!
//! Bound: at most `tls.max_connections` TLS connections at once, MQTT and
//! HTTPS together ([`TlsSlot`]; one more is closed at accept), each holding
//! rustls' state and buffers, at most [`config::CONNECTION_BYTES`]; the two
//! server configurations (certificates and keys, parsed once per load).
//!
//! Reload: [`Tls::reload`] (SIGHUP, beside the password files) re-reads the
//! files; new handshakes use them, open connections keep theirs. A file
//! that does not load keeps what is in force and says why; at start it
//! refuses to start, naming the file.
//!
//! Client certificates are asked for on the MQTT TLS port only, when
//! `tls.client_ca_file` is set (required with
//! `tls.require_client_certificate`). HTTPS serves browsers, which have
//! none: there, tokens authenticate (`api::auth`).

pub mod config;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;
pub use config::TlsConfig;

/// Why the TLS files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{key} = {path}: {message}")]
    File {
        key: &'static str,
        path: String,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Which listener a handshake is for: they differ in client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Mqtt,
    Https,
}

/// The server configurations in force, swapped whole on reload.
struct ServerConfigs {
    mqtt: Arc<ServerConfig>,
    https: Arc<ServerConfig>,
}

/// The gateway's TLS: what is in force, and the bound on connections.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfigs>>,
    /// Its `tls_connections` gauge is the count of open TLS connections.
    metrics: Arc<Metrics>,
}

/// A connection's place under `tls.max_connections` (the
/// `tls_connections` gauge); given back on drop.
#[derive(Debug)]
pub struct TlsSlot(Arc<Metrics>);

impl Drop for TlsSlot {
    fn drop(&mut self) {
        Metrics::dec(&self.0.tls_connections);
    }
}

/// A TLS connection whose handshake finished.
pub struct Accepted {
    /// Boxed: rustls' connection state is a few KiB, and the tasks that
    /// hold it stay small while they wait.
    pub stream: Box<TlsStream<TcpStream>>,
    /// The subject of the client's verified certificate (its CN, else its
    /// first DNS name), when it sent one.
    pub identity: Option<Box<str>>,
    pub slot: TlsSlot,
}

impl Tls {
    /// Loads the files; `None` when TLS is not configured. Fails closed: a
    /// file that is missing, empty or invalid refuses to start.
    pub fn new(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<Option<Arc<Tls>>, TlsError> {
        if !config.enabled() {
            return Ok(None);
        }
        let current = load(config)?;
        Ok(Some(Arc::new(Tls {
            config: config.clone(),
            current: RwLock::new(Arc::new(current)),
            metrics,
        })))
    }

    /// Re-reads the files; on an error what is in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.config)?;
        *self.current.write() = Arc::new(fresh);
        Metrics::inc(&self.metrics.tls_reloads_total);
        Ok(())
    }

    /// Takes a place under `tls.max_connections`, then runs the handshake
    /// under `tls.handshake_timeout_ms`. `None`: refused or failed (counted,
    /// logged at debug: a port scan must not flood the log).
    pub async fn accept(&self, tcp: TcpStream, listener: Listener) -> Option<Accepted> {
        let m = &self.metrics;
        let max = self.config.max_connections.get() as u64;
        let taken = m
            .tls_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            Metrics::inc(&m.tls_refused_total_limit);
            return None;
        }
        let slot = TlsSlot(self.metrics.clone());
        let server = {
            let current = self.current.read();
            match listener {
                Listener::Mqtt => current.mqtt.clone(),
                Listener::Https => current.https.clone(),
            }
        };
        let peer = tcp.peer_addr().ok();
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let handshake = acceptor.accept_with(tcp, |connection| {
            connection.set_buffer_limit(Some(config::SEND_BUFFER_BYTES));
        });
        let timeout = Duration::from_millis(self.config.handshake_timeout_ms);
        let stream = match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                Metrics::inc(&m.tls_refused_total_handshake_failed);
                tracing::debug!(?peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                Metrics::inc(&m.tls_refused_total_handshake_timeout);
                tracing::debug!(?peer, "TLS handshake not finished in time; closed");
                return None;
            }
        };
        Metrics::inc(&m.tls_handshakes_total);
        let identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| certificate_identity(leaf));
        Some(Accepted {
            stream: Box::new(stream),
            identity,
            slot,
        })
    }

    /// Is a verified certificate's subject the client's user name?
    pub fn identity_is_username(&self) -> bool {
        self.config.use_identity_as_username
    }
}

/// The subject CN of a certificate, else its first DNS name.
fn certificate_identity(der: &CertificateDer<'_>) -> Option<Box<str>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.into());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).into()),
        _ => None,
    })
}

fn load(config: &TlsConfig) -> Result<ServerConfigs, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::File {
            key: "cert_file",
            path: String::new(),
            message: "tls.cert_file and tls.key_file are needed".into(),
        });
    };
    let chain = read_certificates("cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
        key: "key_file",
        path: key_file.display().to_string(),
        message: format!("no private key read: {e}"),
    })?;
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()
    };
    let https = builder()?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())?;
    let mqtt = match &config.client_ca_file {
        None => builder()?.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certificates("client_ca_file", ca_file)? {
                roots.add(ca)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match config.require_client_certificate {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| TlsError::File {
                key: "client_ca_file",
                path: ca_file.display().to_string(),
                message: e.to_string(),
            })?;
            builder()?.with_client_cert_verifier(verifier)
        }
    }
    .with_single_cert(chain, key)?;
    Ok(ServerConfigs {
        mqtt: Arc::new(mqtt),
        https: Arc::new(https),
    })
}

/// Every certificate in a PEM file; none is an error, as is a bad block.
fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        key,
        path: path.display().to_string(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_error("holds no certificate".into()));
    }
    Ok(chain)
}
