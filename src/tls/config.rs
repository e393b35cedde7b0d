//! `[tls]`: MQTT over TLS beside the plain port, HTTPS on the HTTP port,
//! the certificate files, client certificates as identity, and the bounds
//! of the handshake.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::budget::Item;
use crate::config::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// MQTT over TLS (port 8883 by convention), served by the same edge as
    /// `mqtt.listen`. Unset: no TLS port.
    pub mqtt_listen: Option<SocketAddr>,
    /// Serve `http.listen` as HTTPS (the API, the WebSockets, the live map).
    pub https: bool,
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates on the MQTT TLS port
    /// are verified against. Unset: client certificates are not asked for.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse, in the handshake, an MQTT TLS client without a certificate
    /// from `client_ca_file` (Mosquitto's `require_certificate`).
    pub require_client_certificate: bool,
    /// A verified client certificate's subject CN (else its first DNS name)
    /// is the client's user name, and no password is asked for (Mosquitto's
    /// `use_identity_as_username`).
    pub use_identity_as_username: bool,
    /// TCP accept to finished handshake; a client silent for longer is
    /// closed, so a stalled handshake holds nothing for long.
    pub handshake_timeout_ms: u64,
    /// TLS connections at once, MQTT and HTTPS together (each holds
    /// rustls' buffers, [`CONNECTION_BYTES`]); one more is closed at accept
    /// and counted. They count against `mqtt.max_connections` or
    /// `http.max_connections` too.
    pub max_connections: NonZeroUsize,
}

/// What one TLS connection may hold in rustls: its state, a received
/// record (16 KiB + overhead), the received plaintext it has not handed
/// over (16 KiB) and what waits to be sent, capped at
/// [`SEND_BUFFER_BYTES`].
pub const CONNECTION_BYTES: u64 = 4096 + 18 * 1024 + 16 * 1024 + SEND_BUFFER_BYTES as u64;
/// rustls' cap on queued outgoing TLS data per connection (its default is
/// 64 KiB): past it, writes wait for the socket, as a plain socket's do.
pub const SEND_BUFFER_BYTES: usize = 16 * 1024;

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            mqtt_listen: None,
            https: false,
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            require_client_certificate: false,
            use_identity_as_username: false,
            handshake_timeout_ms: 10_000,
            max_connections: crate::config::nz(256),
        }
    }
}

impl TlsConfig {
    /// Is any listener served over TLS?
    pub fn enabled(&self) -> bool {
        self.mqtt_listen.is_some() || self.https
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !self.enabled() {
            if self.cert_file.is_some() || self.client_ca_file.is_some() {
                return invalid(
                    "tls.cert_file is set but nothing uses it: set tls.mqtt_listen and/or tls.https = true",
                );
            }
            return Ok(());
        }
        if self.cert_file.is_none() || self.key_file.is_none() {
            return invalid("tls.mqtt_listen or tls.https needs tls.cert_file and tls.key_file");
        }
        if self.handshake_timeout_ms == 0 {
            return invalid("tls.handshake_timeout_ms must be above 0");
        }
        if (self.require_client_certificate || self.use_identity_as_username)
            && self.client_ca_file.is_none()
        {
            return invalid(
                "tls.require_client_certificate and tls.use_identity_as_username need tls.client_ca_file (the CAs client certificates are checked against)",
            );
        }
        if self.client_ca_file.is_some() && self.mqtt_listen.is_none() {
            return invalid(
                "tls.client_ca_file applies to the MQTT TLS port: set tls.mqtt_listen too",
            );
        }
        Ok(())
    }

    pub fn budget_items(
        &self,
        http_max_connections: usize,
        mqtt_max_connections: usize,
    ) -> Vec<Item> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut reachable = 0;
        if self.https {
            reachable += http_max_connections;
        }
        if self.mqtt_listen.is_some() {
            reachable += mqtt_max_connections;
        }
        let connections = self.max_connections.get().min(reachable) as u64;
        vec![Item {
            name: "TLS connections",
            bytes: connections * CONNECTION_BYTES,
            why: format!(
                "tls.max_connections = {} (at most what the TLS listeners admit) × {} KiB of rustls state and buffers",
                connections,
                CONNECTION_BYTES / 1024
            ),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> TlsConfig {
        TlsConfig {
            https: true,
            cert_file: Some("server.pem".into()),
            key_file: Some("server.key".into()),
            ..TlsConfig::default()
        }
    }

    fn refusal(config: &TlsConfig) -> String {
        match config.validate() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted {config:?}"),
        }
    }

    #[test]
    fn off_by_default_and_costs_nothing() {
        let config = TlsConfig::default();
        assert!(!config.enabled());
        assert!(config.validate().is_ok());
        assert!(config.budget_items(32, 6000).is_empty());
    }

    #[test]
    fn a_tls_listener_needs_a_certificate_and_a_key() {
        let config = TlsConfig {
            cert_file: None,
            ..on()
        };
        assert!(refusal(&config).contains("tls.cert_file and tls.key_file"));
        assert!(on().validate().is_ok());
    }

    #[test]
    fn certificates_without_a_listener_are_a_mistake_said_so() {
        let config = TlsConfig {
            https: false,
            ..on()
        };
        assert!(refusal(&config).contains("nothing uses it"));
    }

    #[test]
    fn client_certificate_options_need_a_ca_and_the_mqtt_port() {
        let config = TlsConfig {
            use_identity_as_username: true,
            ..on()
        };
        assert!(refusal(&config).contains("tls.client_ca_file"));
        let config = TlsConfig {
            client_ca_file: Some("ca.pem".into()),
            ..on()
        };
        assert!(refusal(&config).contains("tls.mqtt_listen"));
    }

    #[test]
    fn the_budget_counts_what_the_listeners_can_admit() {
        // HTTPS alone: at most http.max_connections TLS connections.
        let items = on().budget_items(32, 6000);
        assert_eq!(items[0].bytes, 32 * CONNECTION_BYTES);
        let both = TlsConfig {
            mqtt_listen: Some("127.0.0.1:8883".parse().unwrap()),
            ..on()
        };
        assert_eq!(both.budget_items(32, 6000)[0].bytes, 256 * CONNECTION_BYTES);
    }
}
