//! Turning the `[mqtt]` section ([`MqttConfig`]) into a broker address, TLS settings and rumqttc
//! options.
//!
//! Secrets never live in the configuration: the password is read from a file or an
//! environment variable when the uplink starts, kept in a [`Secret`] whose `Debug` is redacted,
//! and never logged.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{MqttConfig, MqttProtocol};

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// Plain TCP.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// TLS.
    Tls {
        /// Host name or address (also the name the certificate must carry).
        host: String,
        /// Port.
        port: u16,
    },
    /// The in-process broker.
    Embedded(SocketAddr),
}

impl BrokerUrl {
    /// Parse `mqtt://host[:port]`, `mqtts://host[:port]` or `embedded`.
    pub fn parse(url: &str, embedded_listen: SocketAddr) -> Result<Self, UplinkConfigError> {
        let bad = |why: &str| UplinkConfigError::Url {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        if url == "embedded" {
            return Ok(Self::Embedded(embedded_listen));
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(bad(
                "expected mqtt://host:port, mqtts://host:port or embedded",
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(bad(
                "only host and port are allowed (credentials go in username/password_file)",
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in IPv6 address"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err(bad("unexpected text after ]")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("port must be 1-65535"))?,
            None => default_port,
        };
        if port == 0 {
            return Err(bad("port must be 1-65535"));
        }
        let host = host.to_owned();
        Ok(if tls {
            Self::Tls { host, port }
        } else {
            Self::Tcp { host, port }
        })
    }
}

/// A password: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(s: String) -> Self {
        Self(s)
    }
    /// The secret itself; only for handing to the MQTT client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configuration problem found when the uplink starts (files are read then).
#[derive(Debug, thiserror::Error)]
pub enum UplinkConfigError {
    /// The url is not one we understand.
    #[error("mqtt.url {url:?}: {why}")]
    Url {
        /// The url.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// A file could not be read.
    #[error("mqtt.{key}: cannot read {path}: {source}")]
    File {
        /// Config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The password environment variable is unset or not UTF-8.
    #[error("mqtt.password_env: environment variable {0} is not set (or not UTF-8)")]
    PasswordEnv(String),
    /// A PEM file held nothing usable.
    #[error("mqtt.{key}: {path}: {why}")]
    Pem {
        /// Config key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// TLS settings without `mqtts://`, or a certificate without its key.
    #[error("mqtt: {0}")]
    Inconsistent(String),
    /// rustls refused the configuration.
    #[error("mqtt: TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// A value out of range.
    #[error("mqtt.{key}: {why}")]
    Range {
        /// Config key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, UplinkConfigError> {
    std::fs::read(path).map_err(|source| UplinkConfigError::File {
        key,
        path: path.to_owned(),
        source,
    })
}

impl MqttConfig {
    /// Check ranges and combinations that serde cannot.
    pub fn validate(&self) -> Result<BrokerUrl, UplinkConfigError> {
        let url = BrokerUrl::parse(&self.url, self.embedded_listen)?;
        let range = |key, why: &str| UplinkConfigError::Range {
            key,
            why: why.to_owned(),
        };
        if self.max_inflight == 0 || self.max_inflight > 1000 {
            return Err(range("max_inflight", "must be 1-1000"));
        }
        if self.max_packet_size < 10 * 1024 || self.max_packet_size > 256 * 1024 * 1024 {
            return Err(range("max_packet_size", "must be 10 KiB - 256 MiB"));
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err(range(
                "reconnect_min",
                "must be > 0 and not above reconnect_max",
            ));
        }
        if self.keepalive < Duration::from_secs(5) || self.keepalive > Duration::from_secs(65535) {
            return Err(range("keepalive", "must be 5s - 65535s"));
        }
        if let Some(id) = &self.client_id
            && (id.trim().is_empty() || id.len() > 65535)
        {
            return Err(range("client_id", "must not be empty"));
        }
        if self.connect_timeout < Duration::from_secs(1) {
            return Err(range("connect_timeout", "must be at least 1s"));
        }
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['+', '#']) {
            return Err(range("topic_prefix", "must be non-empty, without + or #"));
        }
        if self.protocol == MqttProtocol::V5 && matches!(url, BrokerUrl::Embedded(_)) {
            return Err(UplinkConfigError::Inconsistent(
                "protocol = \"5\" needs an external broker: the embedded one is run for \
                 MQTT 3.1.1"
                    .into(),
            ));
        }
        let tls_keys =
            self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some();
        if tls_keys && !matches!(url, BrokerUrl::Tls { .. }) {
            return Err(UplinkConfigError::Inconsistent(
                "ca_file/client_cert/client_key need an mqtts:// url".into(),
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(UplinkConfigError::Inconsistent(
                "client_cert and client_key go together".into(),
            ));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(UplinkConfigError::Inconsistent(
                "give password_file or password_env, not both".into(),
            ));
        }
        Ok(url)
    }

    /// The password, if configured.
    pub fn password(&self) -> Result<Option<Secret>, UplinkConfigError> {
        if let Some(path) = &self.password_file {
            let bytes = read_file("password_file", path)?;
            let text = String::from_utf8(bytes).map_err(|_| UplinkConfigError::Pem {
                key: "password_file",
                path: path.clone(),
                why: "not UTF-8".into(),
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Ok(Some(Secret(text.to_owned())));
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var)
                .map(|v| Some(Secret(v)))
                .map_err(|_| UplinkConfigError::PasswordEnv(var.clone()));
        }
        Ok(None)
    }

    /// The rustls client configuration (ring provider) for `mqtts://`.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, UplinkConfigError> {
        let mut roots = rustls::RootCertStore::empty();
        let Some(ca_path) = &self.ca_file else {
            return Err(UplinkConfigError::Inconsistent(
                "mqtts:// needs ca_file (the CA that signed the broker's certificate)".into(),
            ));
        };
        let ca = read_file("ca_file", ca_path)?;
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| UplinkConfigError::Pem {
                key: "ca_file",
                path: ca_path.clone(),
                why: e.to_string(),
            })?;
            roots.add(cert)?;
        }
        if roots.is_empty() {
            return Err(UplinkConfigError::Pem {
                key: "ca_file",
                path: ca_path.clone(),
                why: "no CERTIFICATE found".into(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        match (&self.client_cert, &self.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let pem = read_file("client_cert", cert_path)?;
                let chain = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| UplinkConfigError::Pem {
                        key: "client_cert",
                        path: cert_path.clone(),
                        why: e.to_string(),
                    })?;
                if chain.is_empty() {
                    return Err(UplinkConfigError::Pem {
                        key: "client_cert",
                        path: cert_path.clone(),
                        why: "no CERTIFICATE found".into(),
                    });
                }
                let key_pem = read_file("client_key", key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    UplinkConfigError::Pem {
                        key: "client_key",
                        path: key_path.clone(),
                        why: e.to_string(),
                    }
                })?;
                Ok(builder.with_client_auth_cert(chain, key)?)
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// Client id, host, port and whether TLS is on, checked.
    fn endpoint(&self, gateway: &str) -> Result<(String, String, u16, bool), UplinkConfigError> {
        let url = self.validate()?;
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("meterd-{gateway}"));
        Ok(match url {
            BrokerUrl::Tcp { host, port } => (client_id, host, port, false),
            BrokerUrl::Tls { host, port } => (client_id, host, port, true),
            BrokerUrl::Embedded(addr) => (client_id, addr.ip().to_string(), addr.port(), false),
        })
    }

    /// User name and password for the CONNECT, if a user name is set.
    fn credentials(&self) -> Result<Option<(String, String)>, UplinkConfigError> {
        match &self.username {
            Some(user) => {
                let pass = self.password()?;
                Ok(Some((
                    user.clone(),
                    pass.as_ref().map_or("", Secret::expose).to_owned(),
                )))
            }
            None if self.password_file.is_some() || self.password_env.is_some() => Err(
                UplinkConfigError::Inconsistent("a password needs a username".into()),
            ),
            None => Ok(None),
        }
    }

    /// The TLS transport (`mqtts://`).
    fn tls_transport(&self) -> Result<Transport, UplinkConfigError> {
        Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(self.tls_config()?),
        )))
    }

    /// rumqttc options: clean session, last will, credentials, TLS, packet size, inflight.
    pub(crate) fn mqtt_options(
        &self,
        gateway: &str,
        will: LastWill,
    ) -> Result<MqttOptions, UplinkConfigError> {
        let (client_id, host, port, tls) = self.endpoint(gateway)?;
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_clean_session(true)
            .set_keep_alive(self.keepalive)
            .set_max_packet_size(self.max_packet_size, self.max_packet_size)
            // One more packet id than our window: with in-order PUBACKs ids never collide.
            .set_inflight(self.max_inflight.saturating_add(1))
            // Our window bounds what is in the channel; room for the DISCONNECT on top.
            .set_request_channel_capacity(usize::from(self.max_inflight) + 4)
            .set_last_will(will);
        if let Some((user, pass)) = self.credentials()? {
            opts.set_credentials(user, pass);
        }
        if tls {
            opts.set_transport(self.tls_transport()?);
        }
        Ok(opts)
    }

    /// rumqttc MQTT 5 options: as [`MqttConfig::mqtt_options`], with clean start and a
    /// session that ends with the connection, so the broker never re-sends on our behalf.
    pub(crate) fn mqtt5_options(
        &self,
        gateway: &str,
        will: rumqttc::v5::mqttbytes::v5::LastWill,
    ) -> Result<rumqttc::v5::MqttOptions, UplinkConfigError> {
        let (client_id, host, port, tls) = self.endpoint(gateway)?;
        let packet = u32::try_from(self.max_packet_size).unwrap_or(u32::MAX);
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, host, port);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        // Publishes and PUBACK-driven refills go out at once instead of waiting for Nagle.
        net.set_tcp_nodelay(true);
        opts.set_clean_start(true)
            .set_session_expiry_interval(Some(0))
            .set_keep_alive(self.keepalive)
            .set_max_packet_size(Some(packet))
            // rumqttc's v5 event loop times the CONNECT by this; the socket by `net`.
            .set_connection_timeout(self.connect_timeout.as_secs().max(1))
            .set_network_options(net)
            // One more packet id than our window: with in-order PUBACKs ids never collide.
            .set_outgoing_inflight_upper_limit(self.max_inflight.saturating_add(1))
            .set_request_channel_capacity(usize::from(self.max_inflight) + 4)
            .set_last_will(will);
        if let Some((user, pass)) = self.credentials()? {
            opts.set_credentials(user, pass);
        }
        if tls {
            opts.set_transport(self.tls_transport()?);
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo() -> SocketAddr {
        "127.0.0.1:1883".parse().unwrap()
    }

    #[test]
    fn urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://broker.lan", lo()).unwrap(),
            BrokerUrl::Tcp {
                host: "broker.lan".into(),
                port: 1883
            }
        );
        assert_eq!(
            BrokerUrl::parse("mqtts://10.0.0.1:8884", lo()).unwrap(),
            BrokerUrl::Tls {
                host: "10.0.0.1".into(),
                port: 8884
            }
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://[::1]:1884", lo()).unwrap(),
            BrokerUrl::Tcp {
                host: "::1".into(),
                port: 1884
            }
        );
        assert_eq!(
            BrokerUrl::parse("embedded", lo()).unwrap(),
            BrokerUrl::Embedded(lo())
        );
        for bad in [
            "tcp://x",
            "mqtt://",
            "mqtt://u:p@h",
            "mqtt://h:0",
            "mqtt://h:99999",
        ] {
            assert!(BrokerUrl::parse(bad, lo()).is_err(), "{bad}");
        }
    }

    #[test]
    fn toml_defaults_and_unknown_fields() {
        let c: MqttConfig = toml::from_str("url = \"mqtt://h\"\nkeepalive = \"20s\"").unwrap();
        assert_eq!(c.keepalive, Duration::from_secs(20));
        assert_eq!(c.max_inflight, 20);
        assert!(toml::from_str::<MqttConfig>("pasword = \"x\"").is_err());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn protocol_versions() {
        assert_eq!(MqttConfig::default().protocol, MqttProtocol::V311);
        let c: MqttConfig = toml::from_str("url = \"mqtt://h\"\nprotocol = \"5\"").unwrap();
        assert_eq!(c.protocol, MqttProtocol::V5);
        let will = rumqttc::v5::mqttbytes::v5::LastWill::new(
            "t",
            "x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            None,
        );
        let o = c.mqtt5_options("gw", will.clone()).unwrap();
        assert_eq!(o.client_id(), "meterd-gw");
        assert!(o.clean_start());
        let c311: MqttConfig = toml::from_str("url = \"mqtt://h\"\nprotocol = \"3.1.1\"").unwrap();
        assert_eq!(c311.protocol, MqttProtocol::V311);
        let bad = toml::from_str::<MqttConfig>("protocol = \"4\"").unwrap_err();
        assert!(bad.to_string().contains("3.1.1"), "{bad}");
        // The embedded broker is run for 3.1.1 only.
        let embedded: MqttConfig = toml::from_str("protocol = \"5\"").unwrap();
        let e = embedded.validate().unwrap_err().to_string();
        assert!(e.contains("external broker"), "{e}");
        assert!(embedded.mqtt5_options("gw", will).is_err());
    }

    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn password_file_trims_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let c = MqttConfig {
            username: Some("u".into()),
            password_file: Some(p),
            ..MqttConfig::default()
        };
        assert_eq!(c.password().unwrap().unwrap().expose(), "s3cret");
    }
}
