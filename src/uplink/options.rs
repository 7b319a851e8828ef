//! Turning the `[mqtt]` section ([`MqttConfig`]) into a broker address, TLS settings and rumqttc
//! options.
//!
//! Secrets never live in the configuration: the password is read from a file or an
//! environment variable when the uplink starts, kept in a [`Secret`] whose `Debug` is redacted,
//! and never logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{BrokerUrl, MqttConfig, MqttSettingError};

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
    /// A setting that cannot work (checked without files).
    #[error(transparent)]
    Setting(#[from] MqttSettingError),
    /// TLS settings that contradict each other.
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
    use crate::config::MqttProtocol;

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
        let embedded: MqttConfig = toml::from_str("url = \"embedded\"\nprotocol = \"5\"").unwrap();
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
