//! `[service]`: the local diagnostics service (status page, `/api/status`, `/metrics`, trace,
//! one-shot reads), as configured. Plain data and its defaults; the service room checks that a
//! non-loopback address has a token before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[service]`: the local diagnostics service.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Run the service at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// TCP address to listen on. Anything but loopback needs `token_file` or `token_env`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Also listen on this Unix socket (replaced if a stale one is there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_socket: Option<PathBuf>,
    /// File holding the bearer token (first line, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Longest wait for a one-shot read (`POST /api/read`), queueing behind the poll in
    /// progress included.
    #[serde(
        default = "default_read_timeout",
        serialize_with = "super::duration::serialize",
        deserialize_with = "super::range::duration::<_, 100, 600_000>"
    )]
    pub read_timeout: Duration,
    /// Further names (with or without `:port`) the service answers to in the `Host` header and
    /// accepts in the `Origin` of a POST, besides the listen address, `localhost`,
    /// `127.0.0.1` and `[::1]` on the listen port (a guard against DNS rebinding and CSRF).
    /// Name the gateway's address here when listening on a non-loopback address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// The quantity whose last values the status page draws per meter as a sparkline (a
    /// canonical name, docs/quantities.md); the service's default (`power.active.total`)
    /// when not set. A meter whose profile lacks it draws none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trend_quantity: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8745))
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(20)
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_listen(),
            unix_socket: None,
            token_file: None,
            token_env: None,
            read_timeout: default_read_timeout(),
            allowed_hosts: Vec::new(),
            trend_quantity: None,
        }
    }
}
