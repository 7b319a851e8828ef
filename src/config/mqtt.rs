//! `[mqtt]`: the uplink to the billing core, as configured: plain data, its defaults, the
//! broker URL and the checks that need no file. The uplink turns it into a broker connection
//! (`uplink::options`: password and certificate files are read there). Secrets are never
//! here: only where to read them from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[mqtt]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883), `mqtts://host[:port]` (TLS, default 8883), or
    /// `embedded` (the in-process broker on [`MqttConfig::embedded_listen`], loopback only).
    /// No default: empty means not configured, and the uplink will not start without it.
    #[serde(default = "default_url")]
    pub url: String,
    /// First topic level.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// MQTT protocol version: `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// MQTT client id; default `meterd-{gateway}`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the CA(s) that signed the broker's certificate (`mqtts://` only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// MQTT keepalive.
    #[serde(
        default = "default_keepalive",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 5_000, 65_535_000>"
    )]
    pub keepalive: Duration,
    /// TCP + TLS + CONNECT must complete within this.
    #[serde(
        default = "default_connect_timeout",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 1_000, 600_000>"
    )]
    pub connect_timeout: Duration,
    /// Readings (and statuses) published but not yet acknowledged, at most. Keep it at or
    /// below the broker's per-client inflight limit.
    #[serde(
        default = "default_max_inflight",
        deserialize_with = "super::range::number::<_, _, 1, 1_000>"
    )]
    pub max_inflight: u16,
    /// Largest MQTT packet sent or received, bytes (rumqttc's default of 10 KiB is too small
    /// for batches with evidence frames).
    #[serde(
        default = "default_max_packet_size",
        deserialize_with = "super::range::number::<_, _, 10_240, 268_435_456>"
    )]
    pub max_packet_size: usize,
    /// First reconnect delay.
    #[serde(
        default = "default_reconnect_min",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 10, 3_600_000>"
    )]
    pub reconnect_min: Duration,
    /// Longest reconnect delay (the delay doubles up to this, with jitter).
    #[serde(
        default = "default_reconnect_max",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 100, 86_400_000>"
    )]
    pub reconnect_max: Duration,
    /// How often the retained gateway status is refreshed while online.
    #[serde(
        default = "default_status_interval",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 1_000, 86_400_000>"
    )]
    pub status_interval: Duration,
    /// Clean shutdown (offline status, DISCONNECT) gives up after this.
    #[serde(
        default = "default_shutdown_timeout",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 0, 60_000>"
    )]
    pub shutdown_timeout: Duration,
    /// Listen address of the embedded broker (used when `url = "embedded"`).
    #[serde(default = "default_embedded_listen")]
    pub embedded_listen: SocketAddr,
}

/// The MQTT protocol version the uplink speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0: the same topics, payloads, QoS 1, retained statuses and last will; a
    /// PUBACK with a failure reason code leaves the reading in the outbox (sent again after
    /// the next reconnect).
    #[serde(rename = "5")]
    V5,
}

/// Unset: `meterd run` refuses to start without a broker named in the file (defaulting to the
/// in-process broker once deleted readings nobody had received, on its PUBACK).
fn default_url() -> String {
    String::new()
}
fn default_prefix() -> String {
    "meterd".to_owned()
}
fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_inflight() -> u16 {
    20
}
fn default_max_packet_size() -> usize {
    1024 * 1024
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_status_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_embedded_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            topic_prefix: default_prefix(),
            protocol: MqttProtocol::default(),
            client_id: None,
            username: None,
            password_file: None,
            password_env: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keepalive: default_keepalive(),
            connect_timeout: default_connect_timeout(),
            max_inflight: default_max_inflight(),
            max_packet_size: default_max_packet_size(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            status_interval: default_status_interval(),
            shutdown_timeout: default_shutdown_timeout(),
            embedded_listen: default_embedded_listen(),
        }
    }
}

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
    pub fn parse(url: &str, embedded_listen: SocketAddr) -> Result<Self, MqttSettingError> {
        let bad = |why: &str| MqttSettingError::Url {
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

/// A `[mqtt]` setting that cannot work, found without touching any file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttSettingError {
    /// The url is not one we understand.
    #[error("mqtt.url {url:?}: {why}")]
    Url {
        /// The url.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Settings that contradict each other.
    #[error("mqtt: {0}")]
    Inconsistent(String),
    /// A value out of range.
    #[error("mqtt.{key}: {why}")]
    Range {
        /// Config key.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl MqttConfig {
    /// Check ranges and combinations that serde cannot.
    pub fn validate(&self) -> Result<BrokerUrl, MqttSettingError> {
        if self.url.is_empty() {
            return Err(MqttSettingError::Url {
                url: String::new(),
                why: "no broker configured: write url = \"mqtt://host:1883\" (or \"mqtts://…\"); \
                      \"embedded\" runs the in-process broker, for demos and tests"
                    .into(),
            });
        }
        let url = BrokerUrl::parse(&self.url, self.embedded_listen)?;
        if let BrokerUrl::Embedded(addr) = url
            && !addr.ip().is_loopback()
        {
            return Err(MqttSettingError::Range {
                key: "embedded_listen",
                why: format!(
                    "the embedded broker has no authentication: it listens on loopback only, not {addr}"
                ),
            });
        }
        let range = |key, why: &str| MqttSettingError::Range {
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
            return Err(MqttSettingError::Inconsistent(
                "protocol = \"5\" needs an external broker: the embedded one is run for \
                 MQTT 3.1.1"
                    .into(),
            ));
        }
        let tls_keys =
            self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some();
        if tls_keys && !matches!(url, BrokerUrl::Tls { .. }) {
            return Err(MqttSettingError::Inconsistent(
                "ca_file/client_cert/client_key need an mqtts:// url".into(),
            ));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(MqttSettingError::Inconsistent(
                "client_cert and client_key go together".into(),
            ));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(MqttSettingError::Inconsistent(
                "give password_file or password_env, not both".into(),
            ));
        }
        Ok(url)
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
    fn no_url_means_no_broker_and_the_embedded_one_stays_on_loopback() {
        let none: MqttConfig = toml::from_str("").unwrap();
        let e = none.validate().unwrap_err().to_string();
        assert!(e.contains("no broker configured"), "{e}");
        let open: MqttConfig =
            toml::from_str("url = \"embedded\"\nembedded_listen = \"0.0.0.0:1883\"").unwrap();
        let e = open.validate().unwrap_err().to_string();
        assert!(e.contains("loopback only"), "{e}");
        let local: MqttConfig = toml::from_str("url = \"embedded\"").unwrap();
        assert_eq!(
            local.validate().unwrap(),
            BrokerUrl::Embedded(local.embedded_listen)
        );
    }
}
