//! `[mqtt]`: the uplink to the billing core, as configured. Plain data and its defaults; the
//! uplink turns it into a broker connection (`uplink::options`). Secrets are never here: only
//! where to read them from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The `[mqtt]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883), `mqtts://host[:port]` (TLS, default 8883), or
    /// `embedded` (the in-process broker on [`MqttConfig::embedded_listen`]).
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
    #[serde(default = "default_keepalive", with = "duration")]
    pub keepalive: Duration,
    /// TCP + TLS + CONNECT must complete within this.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Readings (and statuses) published but not yet acknowledged, at most. Keep it at or
    /// below the broker's per-client inflight limit.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// Largest MQTT packet sent or received, bytes (rumqttc's default of 10 KiB is too small
    /// for batches with evidence frames).
    #[serde(default = "default_max_packet_size")]
    pub max_packet_size: usize,
    /// First reconnect delay.
    #[serde(default = "default_reconnect_min", with = "duration")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay (the delay doubles up to this, with jitter).
    #[serde(default = "default_reconnect_max", with = "duration")]
    pub reconnect_max: Duration,
    /// How often the retained gateway status is refreshed while online.
    #[serde(default = "default_status_interval", with = "duration")]
    pub status_interval: Duration,
    /// Clean shutdown (offline status, DISCONNECT) gives up after this.
    #[serde(default = "default_shutdown_timeout", with = "duration")]
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

fn default_url() -> String {
    "embedded".to_owned()
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
