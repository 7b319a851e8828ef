//! The HTTP side of the service: routes, the bearer-token check, and the handlers.
//!
//! Handlers only read snapshots, subscribe to the frame channel, or queue a one-shot read into
//! the owning bus task and wait for its answer (bounded by `read_timeout`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State as AxState};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::Stream;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, oneshot, watch};
use tokio::task::JoinSet;

use super::Handles;
use super::guard::{AllowedHosts, Client, Limits, ReadLimiter, is_json};
use super::report::Snapshot;
use crate::bus::task::BusCommand;
use crate::bus::trace::{Direction, FrameEvent};
use crate::config::ServiceConfig;
use crate::hex_input::to_hex;
use crate::meter::explain::one_line_as;
use crate::reading::rfc3339_millis;
use crate::sync::lock;

const PAGE: &str = include_str!("page.html");

/// Shared state of the handlers.
#[derive(Clone)]
pub(super) struct State {
    handles: Handles,
    token: Option<Arc<str>>,
    read_timeout: Duration,
    stop: watch::Receiver<bool>,
    /// The names the TCP listener answers to (`None` on the Unix socket: no browser there).
    hosts: Option<Arc<AllowedHosts>>,
    limits: Limits,
    /// Connections open, over all listeners.
    connections: Arc<Semaphore>,
    /// Live traces open.
    traces: Arc<Semaphore>,
    /// One-shot reads per client.
    reads: Arc<std::sync::Mutex<ReadLimiter>>,
}

impl State {
    pub(super) fn new(
        handles: Handles,
        token: Option<Arc<str>>,
        config: &ServiceConfig,
        stop: watch::Receiver<bool>,
        limits: Limits,
    ) -> Self {
        Self {
            handles,
            token,
            read_timeout: config.read_timeout,
            stop,
            hosts: None,
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            traces: Arc::new(Semaphore::new(limits.max_traces)),
            reads: Arc::new(std::sync::Mutex::new(ReadLimiter::new(&limits))),
        }
    }

    /// This state for the TCP listener bound to `bound`: `Host` and `Origin` are checked.
    pub(super) fn for_tcp(&self, bound: std::net::SocketAddr, config: &ServiceConfig) -> Self {
        let mut s = self.clone();
        s.hosts = Some(Arc::new(AllowedHosts::new(bound, &config.allowed_hosts)));
        s
    }
}

fn router(state: State) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/api/trace", get(trace))
        .route("/api/read", post(read))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        // Outermost: a misdirected or cross-site request is refused before the token check.
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A listener of the service.
pub(super) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

/// Accepts connections until the service stops, at most `max_connections` at once (more wait
/// in the listen backlog), and serves each with the header-read/idle timeout; on stop, open
/// connections finish their request in progress (live traces end) and close.
pub(super) async fn serve(listener: Listener, state: State) {
    let app = router(state.clone());
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = state.connections.clone().acquire_owned() => p,
            _ = stopped(state.stop.clone()) => break,
        };
        let Ok(permit) = permit else { break };
        let stop = state.stop.clone();
        let limits = state.limits;
        let accepted = match &listener {
            Listener::Tcp(l) => tokio::select! {
                a = l.accept() => a.map(|(s, peer)| {
                    conns.spawn(connection(s, Client::Ip(peer.ip()), app.clone(), limits, stop, permit));
                }),
                _ = stopped(state.stop.clone()) => break,
            },
            #[cfg(unix)]
            Listener::Unix(l) => tokio::select! {
                a = l.accept() => a.map(|(s, _)| {
                    conns.spawn(connection(s, Client::Unix, app.clone(), limits, stop, permit));
                }),
                _ = stopped(state.stop.clone()) => break,
            },
        };
        if let Err(e) = accepted {
            // Out of file descriptors and the like: do not spin.
            tracing::warn!(error = %e, "diagnostics service: accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// One HTTP/1.1 connection from `client`.
async fn connection<IO>(
    io: IO,
    client: Client,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app.layer(Extension(client)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header-read timer starts when the connection waits for a request's first byte, so it
    // also closes idle keep-alive connections. Half-close stays off: a client's EOF while its
    // request is being handled ends the connection and drops the handler (a one-shot read's
    // reply receiver with it, which the bus task sees as closed).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "diagnostics connection closed");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// A header as text (a non-text value as U+FFFD, which no check accepts).
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
}

/// Refuses misdirected (`Host`), cross-site (`Origin`) and non-JSON POST requests; see
/// [`super::guard`].
async fn guard(AxState(state): AxState<State>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let (host, origin, content_type) = (
        header_text(headers, header::HOST),
        header_text(headers, header::ORIGIN),
        header_text(headers, header::CONTENT_TYPE),
    );
    let method = req.method().clone();
    if let Some(hosts) = &state.hosts {
        match host {
            Some(h) if hosts.allows_host(&h) => {}
            Some(h) => {
                return error(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "this service does not answer to Host {h:?} (see [service] allowed_hosts)"
                    ),
                );
            }
            None => return error(StatusCode::BAD_REQUEST, "a Host header is required"),
        }
        let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe
            && let Some(origin) = origin
            && !hosts.allows_origin(&origin)
        {
            return error(
                StatusCode::FORBIDDEN,
                format!("cross-site request from Origin {origin:?} refused"),
            );
        }
    }
    if method == Method::POST && !content_type.is_some_and(|c| is_json(&c)) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "POST needs Content-Type: application/json",
        );
    }
    next.run(req).await
}

/// Compares without an early exit on the first differing byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "access_token").then(|| v.to_owned())
    })
}

/// With a token configured, every request needs `Authorization: Bearer TOKEN` (or, for
/// browsers that cannot set headers on a page load or an EventSource, `?access_token=TOKEN`).
async fn auth(AxState(state): AxState<State>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let given = header_token.or_else(|| query_token(req.uri().query()));
    match given {
        Some(t) if same(t.trim().as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"meterd\""),
            );
            r
        }
    }
}

fn error(code: StatusCode, reason: impl Into<String>) -> Response {
    (code, Json(json!({"error": reason.into()}))).into_response()
}

/// The page, with the status at load time embedded so it renders before any request.
async fn page(AxState(state): AxState<State>) -> Response {
    let report = Snapshot::take(&state.handles).report(&state.handles);
    let initial = serde_json::to_string(&report)
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--");
    let html = PAGE.replace("/*INITIAL_STATUS*/null", &initial);
    let mut r = Html(html).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn status(AxState(state): AxState<State>) -> Response {
    let report = Snapshot::take(&state.handles).report(&state.handles);
    Json(report).into_response()
}

async fn metrics(AxState(state): AxState<State>, headers: HeaderMap) -> Response {
    let snap = Snapshot::take(&state.handles);
    let open_metrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    match super::metrics::render(&snap, &state.handles) {
        Ok(text) => {
            let mut h = HeaderMap::new();
            let (ctype, body) = if open_metrics {
                (
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                )
            } else {
                (
                    "text/plain; version=0.0.4; charset=utf-8",
                    super::metrics::to_classic(&text),
                )
            };
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            (h, body).into_response()
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        ),
    }
}

/// `?bus=…&meter=…`.
#[derive(Debug, Deserialize)]
struct TraceQuery {
    bus: Option<String>,
    meter: Option<String>,
}

/// One frame as JSON for the trace stream.
pub fn frame_json(e: &FrameEvent) -> serde_json::Value {
    let decode = match e.direction {
        Direction::Tx | Direction::Rx => one_line_as(&e.bytes, e.protocol),
        Direction::RxUnusable => format!("skipped: {}", e.note),
        Direction::Note => e.note.clone(),
    };
    json!({
        "at": rfc3339_millis(e.at),
        "bus": &*e.bus,
        "meter": e.meter.as_deref(),
        "direction": e.direction.label(),
        "hex": to_hex(&e.bytes),
        "decode": decode,
    })
}

async fn trace(AxState(state): AxState<State>, Query(q): Query<TraceQuery>) -> Response {
    let Ok(permit) = state.traces.clone().try_acquire_owned() else {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} live traces are open already; close one",
                state.limits.max_traces
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    trace_stream(state, q, permit).into_response()
}

/// The trace's event stream; holds `permit` (one of the live traces) until it ends.
fn trace_stream(
    state: State,
    q: TraceQuery,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.handles.frames.subscribe();
    let stop = state.stop.clone();
    let hello = Event::default().event("hello").data(
        json!({"at": rfc3339_millis(crate::clock::now()), "bus": q.bus, "meter": q.meter})
            .to_string(),
    );
    let stream = futures_util::stream::unfold(
        (rx, stop, q, Some(hello), permit),
        |(mut rx, mut stop, q, hello, permit)| async move {
            if let Some(h) = hello {
                return Some((Ok(h), (rx, stop, q, None, permit)));
            }
            loop {
                if *stop.borrow() {
                    return None;
                }
                let got = tokio::select! {
                    r = rx.recv() => r,
                    _ = stop.changed() => return None,
                };
                match got {
                    Ok(e) => {
                        if q.bus.as_ref().is_some_and(|b| **b != *e.bus)
                            || q.meter
                                .as_ref()
                                .is_some_and(|m| e.meter.as_deref() != Some(m.as_str()))
                        {
                            continue;
                        }
                        let ev = Event::default()
                            .event("frame")
                            .data(frame_json(&e).to_string());
                        return Some((Ok(ev), (rx, stop, q, None, permit)));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let ev = Event::default()
                            .event("lagged")
                            .data(json!({"missed": n}).to_string());
                        return Some((Ok(ev), (rx, stop, q, None, permit)));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `{"meter": "…"}`.
#[derive(Debug, Deserialize)]
struct ReadRequest {
    meter: String,
}

/// A one-shot read. Rate-limited per client ([`ReadLimiter`]). A client that goes away drops
/// this future, and with it the reply's receiver: the bus task sees the request closed.
async fn read(
    AxState(state): AxState<State>,
    client: Option<Extension<Client>>,
    body: axum::body::Bytes,
) -> Response {
    let client = client.map_or(Client::Unix, |Extension(c)| c);
    let allowed = lock(&state.reads).take(client, std::time::Instant::now());
    if let Err(wait) = allowed {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("one-shot reads are limited; retry in {secs} s"),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let req: ReadRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"meter\": \"ID\"}}: {e}"),
            );
        }
    };
    let owner = state
        .handles
        .buses
        .iter()
        .find(|b| lock(&b.status).meters.iter().any(|m| m.id == req.meter));
    let Some(bus) = owner else {
        let known: Vec<String> = state
            .handles
            .buses
            .iter()
            .flat_map(|b| {
                lock(&b.status)
                    .meters
                    .iter()
                    .map(|m| m.id.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no meter {:?} in this daemon{}; known: {}",
                req.meter,
                crate::suggest::did_you_mean(&req.meter, known.iter().map(String::as_str)),
                known.join(", ")
            ),
        );
    };
    let (tx, rx) = oneshot::channel();
    let deadline = tokio::time::Instant::now() + state.read_timeout;
    let queued = tokio::time::timeout_at(
        deadline,
        bus.commands.send(BusCommand::ReadNow {
            meter: req.meter.clone(),
            reply: tx,
        }),
    )
    .await;
    match queued {
        Err(_) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "bus {} did not take the read within {}",
                    bus.name,
                    humantime::format_duration(state.read_timeout)
                ),
            );
        }
        Ok(Err(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("bus {} is stopping", bus.name),
            );
        }
        Ok(Ok(())) => {}
    }
    match tokio::time::timeout_at(deadline, rx).await {
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "meter {} not read within {} (bus {} busy or the meter slow)",
                req.meter,
                humantime::format_duration(state.read_timeout),
                bus.name
            ),
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("bus {} stopped before the read", bus.name),
        ),
        Ok(Ok(Err(reason))) => error(StatusCode::NOT_FOUND, reason),
        Ok(Ok(Ok(batch))) => {
            lock(&state.handles.book).record_one_shot(&batch);
            Json(batch).into_response()
        }
    }
}
