//! What the service refuses before a handler runs, and the limits it keeps.
//!
//! - **DNS rebinding:** a page on `evil.example` whose name later resolves to 127.0.0.1 makes the
//!   browser send `Host: evil.example:8745` to the service. Only the listen address, `localhost`,
//!   `127.0.0.1`, `[::1]` (on the listen port) and `[service] allowed_hosts` are answered;
//!   anything else gets 421 Misdirected Request.
//! - **CSRF:** a state-changing request (anything but GET, HEAD, OPTIONS) with an `Origin`
//!   must come from an allowed host (403 otherwise); non-browser clients send no `Origin`. A
//!   POST must say `Content-Type: application/json` (415 otherwise): a cross-site form or
//!   a "simple" `fetch` cannot send that without a CORS preflight, which the service never
//!   grants.
//! - **Limits:** at most [`Limits::max_connections`] connections (more wait in the kernel's
//!   backlog), headers within [`Limits::header_read_timeout`] (slowloris) which is also how
//!   long an idle keep-alive connection is kept, at most [`Limits::max_traces`] live traces
//!   (503 beyond), and one-shot reads per client by a token bucket ([`ReadLimiter`], 429 with
//!   `Retry-After` beyond).
//!
//! The Unix socket listener skips the `Host`/`Origin` checks: a browser cannot reach it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The service's resource limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (over all listeners).
    pub max_connections: usize,
    /// A request's headers must arrive within this; an idle keep-alive connection is closed
    /// after it too.
    pub header_read_timeout: Duration,
    /// Live traces (`GET /api/trace`, SSE) at once.
    pub max_traces: usize,
    /// One-shot reads a client may send at once…
    pub read_burst: u32,
    /// …and then one per this interval.
    pub read_every: Duration,
}

impl Default for Limits {
    /// 32 connections: a page, a scraper, a few technicians' CLIs and traces, with room to
    /// spare, while a flood cannot hold more than 32 sockets and tasks. 10 s for headers: a
    /// CLI or browser on the LAN sends them in milliseconds. 4 traces: each costs a broadcast
    /// receiver that every frame of every bus is cloned for. One read a second with a burst
    /// of 3: a technician's reads, never a loop that keeps a bus from polling.
    fn default() -> Self {
        Limits {
            max_connections: 32,
            header_read_timeout: Duration::from_secs(10),
            max_traces: 4,
            read_burst: 3,
            read_every: Duration::from_secs(1),
        }
    }
}

/// `name[:port]` split; IPv6 literals keep their brackets. `None` for an unparsable port.
fn split_host(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    let (name, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let name = format!("[{inside}]");
        match after.strip_prefix(':') {
            Some(p) => (name, Some(p.parse().ok()?)),
            None if after.is_empty() => (name, None),
            None => return None,
        }
    } else {
        match text.rsplit_once(':') {
            Some((n, p)) => (n.to_owned(), Some(p.parse().ok()?)),
            None => (text.to_owned(), None),
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some((name, port))
}

/// The names the TCP listener answers to.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// The port the listener is bound to.
    port: u16,
    /// Names with the port they must come with (`None`: the listen port).
    names: Vec<(String, Option<u16>)>,
}

impl AllowedHosts {
    /// The defaults for a listener bound to `bound`, and the configured `extra` names.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Self {
        let ip = match bound.ip() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let mut names: Vec<(String, Option<u16>)> =
            [ip.as_str(), "localhost", "127.0.0.1", "[::1]"]
                .iter()
                .map(|n| (n.to_string(), None))
                .collect();
        for e in extra {
            match split_host(e) {
                Some(n) => names.push(n),
                None => {
                    tracing::warn!(entry = %e, "[service] allowed_hosts: not a host name, ignored")
                }
            }
        }
        AllowedHosts {
            port: bound.port(),
            names,
        }
    }

    /// Whether `host` (`name[:port]`; without a port, `default_port`) is one of ours.
    fn allows(&self, host: &str, default_port: u16) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let port = port.unwrap_or(default_port);
        self.names
            .iter()
            .any(|(n, p)| *n == name && p.unwrap_or(self.port) == port)
    }

    /// A `Host` header (HTTP: port 80 when absent).
    pub fn allows_host(&self, host: &str) -> bool {
        self.allows(host, 80)
    }

    /// An `Origin` header (`scheme://host[:port]`); `null` and other schemes are not ours.
    pub fn allows_origin(&self, origin: &str) -> bool {
        if let Some(rest) = origin.strip_prefix("http://") {
            self.allows(rest.trim_end_matches('/'), 80)
        } else if let Some(rest) = origin.strip_prefix("https://") {
            self.allows(rest.trim_end_matches('/'), 443)
        } else {
            false
        }
    }
}

/// Whether a `Content-Type` header value says JSON (`application/json`, parameters allowed).
pub fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Who sent a request, for the one-shot read limit: the peer's IP address (the Unix socket's
/// clients share one bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A TCP peer.
    Ip(IpAddr),
    /// Anyone on the Unix socket.
    Unix,
}

/// A token bucket per client for `POST /api/read`.
#[derive(Debug)]
pub struct ReadLimiter {
    burst: f64,
    every: Duration,
    buckets: HashMap<Client, (f64, Instant)>,
}

/// Clients remembered at most; beyond, full buckets are forgotten.
const MAX_CLIENTS: usize = 1024;

impl ReadLimiter {
    /// `burst` at once, then one per `every`.
    pub fn new(limits: &Limits) -> Self {
        ReadLimiter {
            burst: f64::from(limits.read_burst.max(1)),
            every: limits.read_every,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `client` at `now`; `Err(wait)` when its bucket is empty.
    pub fn take(&mut self, client: Client, now: Instant) -> Result<(), Duration> {
        let rate = 1.0 / self.every.as_secs_f64().max(1e-3);
        if self.buckets.len() >= MAX_CLIENTS {
            let (burst, every) = (self.burst, self.every);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() / every.as_secs_f64()
                    < burst
            });
        }
        let (tokens, at) = self.buckets.entry(client).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> AllowedHosts {
        AllowedHosts::new(
            "127.0.0.1:8745".parse().expect("addr"),
            &["gw-07.substation.local".into(), "10.1.2.3:80".into()],
        )
    }

    #[test]
    fn hosts_on_the_listen_port_and_configured_names_are_allowed() {
        let h = hosts();
        for ok in [
            "127.0.0.1:8745",
            "localhost:8745",
            "LOCALHOST:8745",
            "[::1]:8745",
            "gw-07.substation.local:8745",
            "10.1.2.3",
            "10.1.2.3:80",
        ] {
            assert!(h.allows_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8745",
            "evil.example",
            "localhost",
            "localhost:80",
            "127.0.0.1:8746",
            "10.1.2.3:8745",
            "",
            "[::1",
            "localhost:x",
        ] {
            assert!(!h.allows_host(bad), "{bad}");
        }
    }

    #[test]
    fn origins_are_checked_like_hosts() {
        let h = hosts();
        assert!(h.allows_origin("http://localhost:8745"));
        assert!(h.allows_origin("http://127.0.0.1:8745/"));
        assert!(h.allows_origin("http://10.1.2.3"));
        assert!(!h.allows_origin("https://evil.example"));
        assert!(!h.allows_origin("http://evil.example:8745"));
        assert!(!h.allows_origin("null"));
        assert!(!h.allows_origin("file://"));
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }

    #[test]
    fn the_read_bucket_allows_a_burst_then_one_per_interval() {
        let mut l = ReadLimiter::new(&Limits::default());
        let t0 = Instant::now();
        let a = Client::Ip("10.0.0.1".parse().expect("ip"));
        let b = Client::Ip("10.0.0.2".parse().expect("ip"));
        for _ in 0..3 {
            assert!(l.take(a, t0).is_ok());
        }
        let wait = l.take(a, t0).expect_err("over the burst");
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(l.take(b, t0).is_ok(), "another client has its own bucket");
        assert!(l.take(a, t0 + Duration::from_millis(1000)).is_ok());
        assert!(l.take(a, t0 + Duration::from_millis(1100)).is_err());
    }
}
