//! The CLI's side of the service: a minimal HTTP/1.1 client for `meterd status`,
//! `meterd trace --daemon` and `meterd read --daemon`.
//!
//! It speaks only to `http://HOST:PORT` (the service is local; no TLS) or `unix:/PATH`, sends
//! `Authorization: Bearer` when `METERD_TOKEN` is set, and turns every failure into one line
//! that says what to do. It never retries.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Where the daemon's service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://HOST:PORT`.
    Tcp(String),
    /// `unix:/PATH`.
    Unix(String),
}

impl Endpoint {
    /// Parses `http://127.0.0.1:8745`, `127.0.0.1:8745` or `unix:/run/meterd.sock`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        if let Some(path) = url.strip_prefix("unix:") {
            return Ok(Endpoint::Unix(path.to_owned()));
        }
        if url.starts_with("https://") {
            return Err("https is not supported: the service is local (http://HOST:PORT)".into());
        }
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let authority = rest.split('/').next().unwrap_or("");
        if authority.is_empty() || !authority.contains(':') {
            return Err(format!("--url: expected http://HOST:PORT, found {url:?}"));
        }
        Ok(Endpoint::Tcp(authority.to_owned()))
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Tcp(a) => format!("http://{a}"),
            Endpoint::Unix(p) => format!("unix:{p}"),
        }
    }
}

/// A failed call, as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// Nothing listens there: the daemon is not running (or its service is off).
    NotRunning(String),
    /// The service answered with an error status.
    Status(StatusCode, String),
    /// Anything else (protocol error, timeout).
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(s) | ClientError::Other(s) => f.write_str(s),
            ClientError::Status(code, s) => write!(f, "{s} (HTTP {})", code.as_u16()),
        }
    }
}

fn token() -> Option<String> {
    std::env::var("METERD_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

async fn connect(
    ep: &Endpoint,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
    let not_running = |e: std::io::Error| {
        ClientError::NotRunning(format!(
            "the daemon is not running, or its diagnostics service is off: nothing answers at {} ({e})",
            ep.describe()
        ))
    };
    let fut = async {
        match ep {
            Endpoint::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(not_running)?;
                handshake(TokioIo::new(s)).await
            }
            #[cfg(unix)]
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p.as_str())
                    .await
                    .map_err(not_running)?;
                handshake(TokioIo::new(s)).await
            }
            #[cfg(not(unix))]
            Endpoint::Unix(_) => Err(ClientError::Other("no Unix sockets here".into())),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| {
            ClientError::NotRunning(format!(
                "no answer from {} within 5 s (is the daemon running?)",
                ep.describe()
            ))
        })?
}

async fn handshake<T>(
    io: TokioIo<T>,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Other(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn call(
    ep: &Endpoint,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<String>,
) -> Result<Response<Incoming>, ClientError> {
    let mut send = connect(ep).await?;
    let host = match ep {
        Endpoint::Tcp(a) => a.clone(),
        Endpoint::Unix(_) => "localhost".into(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("user-agent", concat!("meterd/", env!("CARGO_PKG_VERSION")));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| ClientError::Other(format!("bad request: {e}")))?;
    send.send_request(req)
        .await
        .map_err(|e| ClientError::Other(format!("{} {path}: {e}", ep.describe())))
}

async fn body_text(
    resp: Response<Incoming>,
    timeout: Duration,
) -> Result<(StatusCode, String), ClientError> {
    let status = resp.status();
    let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| ClientError::Other("the answer did not complete in time".into()))?
        .map_err(|e| ClientError::Other(format!("reading the answer: {e}")))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn check(status: StatusCode, text: String) -> Result<String, ClientError> {
    if status.is_success() {
        return Ok(text);
    }
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    let reason = if status == StatusCode::UNAUTHORIZED {
        format!("{reason}: set METERD_TOKEN to the daemon's token")
    } else {
        reason
    };
    Err(ClientError::Status(status, reason))
}

/// `GET path`, the body as text (error statuses become [`ClientError::Status`]).
pub async fn get(ep: &Endpoint, path: &str) -> Result<String, ClientError> {
    get_as(ep, path, token()).await
}

/// [`get`] with an explicit bearer token (None: no `Authorization` header).
pub async fn get_as(
    ep: &Endpoint,
    path: &str,
    token: Option<String>,
) -> Result<String, ClientError> {
    let resp = call(ep, "GET", path, None, token).await?;
    let (status, text) = body_text(resp, Duration::from_secs(30)).await?;
    check(status, text)
}

/// `POST path` with a JSON body; waits up to `timeout` for the answer.
pub async fn post_json(
    ep: &Endpoint,
    path: &str,
    body: String,
    timeout: Duration,
) -> Result<String, ClientError> {
    let resp = tokio::time::timeout(timeout, call(ep, "POST", path, Some(body), token()))
        .await
        .map_err(|_| ClientError::Other("no answer in time".into()))??;
    let (status, text) = body_text(resp, timeout).await?;
    check(status, text)
}

/// `GET path` as a Server-Sent Events stream: calls `on_event(event, data)` for each event
/// until the stream ends (the daemon stopped) or `on_event` returns false.
pub async fn sse(
    ep: &Endpoint,
    path: &str,
    mut on_event: impl FnMut(&str, &str) -> bool,
) -> Result<(), ClientError> {
    let resp = call(ep, "GET", path, None, token()).await?;
    if !resp.status().is_success() {
        let (status, text) = body_text(resp, Duration::from_secs(10)).await?;
        return check(status, text).map(|_| ());
    }
    let mut body = resp.into_body();
    let mut buf = String::new();
    let (mut event, mut data) = (String::new(), String::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Other(format!("trace stream: {e}")))?;
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(chunk));
        while let Some(nl) = buf.find('\n') {
            let line: String = buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !data.is_empty() || !event.is_empty() {
                    let ev = if event.is_empty() { "message" } else { &event };
                    if !on_event(ev, &data) {
                        return Ok(());
                    }
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:8745"),
            Ok(Endpoint::Tcp("127.0.0.1:8745".into()))
        );
        assert_eq!(
            Endpoint::parse("127.0.0.1:9/"),
            Ok(Endpoint::Tcp("127.0.0.1:9".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:/run/m.sock"),
            Ok(Endpoint::Unix("/run/m.sock".into()))
        );
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://localhost").is_err());
    }
}
