//! The service's guards through raw HTTP/1.1 on a TCP socket: DNS rebinding (`Host`), CSRF
//! (`Origin`, `Content-Type`), slowloris, the live-trace cap and the one-shot read limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::guard::Limits;
use super::tests::start;

/// Sends `request` as is and returns the status code and the whole answer (the request says
/// `Connection: close`, or the answer's head is enough).
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut buf))
            .await
            .expect("answer in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        // A streaming answer (SSE) never ends: its head is enough.
        if got.windows(4).any(|w| w == b"\r\n\r\n")
            && got.starts_with(b"HTTP/1.1 200")
            && String::from_utf8_lossy(&got).contains("text/event-stream")
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

fn get(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn post(host: &str, extra: &str, body: &str) -> String {
    format!(
        "POST /api/read HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_cross_site_and_non_json_requests_are_refused() {
    let (_sim, daemon, _dir) = start(r#"listen = "127.0.0.1:0""#).await;
    let addr = daemon.service_addr().expect("bound");
    let port = addr.port();
    let ours = format!("127.0.0.1:{port}");

    // Allowed names on the listen port.
    for host in [
        ours.clone(),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (code, text) = raw(addr, &get(&host, "/api/status")).await;
        assert_eq!(code, 200, "{host}: {text}");
    }
    // DNS rebinding: the browser sends the attacker's name.
    let (code, text) = raw(addr, &get("evil.example:8745", "/api/status")).await;
    assert_eq!(code, 421, "{text}");
    let (code, _) = raw(addr, &get(&format!("evil.example:{port}"), "/")).await;
    assert_eq!(code, 421);
    let (code, _) = raw(addr, &get("localhost:1", "/metrics")).await;
    assert_eq!(code, 421, "another port is another origin");

    let json = "Content-Type: application/json\r\n";
    let body = r#"{"meter": "no-such-meter"}"#;
    // Cross-site POST.
    let (code, text) = raw(
        addr,
        &post(
            &ours,
            &format!("{json}Origin: https://evil.example\r\n"),
            body,
        ),
    )
    .await;
    assert_eq!(code, 403, "{text}");
    let (code, _) = raw(addr, &post(&ours, &format!("{json}Origin: null\r\n"), body)).await;
    assert_eq!(code, 403);
    // A form post (no preflight) or a text/plain fetch.
    for ct in ["application/x-www-form-urlencoded", "text/plain"] {
        let (code, text) = raw(addr, &post(&ours, &format!("Content-Type: {ct}\r\n"), body)).await;
        assert_eq!(code, 415, "{ct}: {text}");
    }
    let (code, _) = raw(addr, &post(&ours, "", body)).await;
    assert_eq!(code, 415, "no content type");
    // Same-origin (the status page) and non-browser clients get through to the handler.
    let (code, text) = raw(
        addr,
        &post(&ours, &format!("{json}Origin: http://{ours}\r\n"), body),
    )
    .await;
    assert_eq!(code, 404, "{text}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_names_are_allowed() {
    let (_sim, daemon, _dir) = start(
        "listen = \"127.0.0.1:0\"\nallowed_hosts = [\"gw-07.substation.local\", \"10.9.8.7:80\"]",
    )
    .await;
    let addr = daemon.service_addr().expect("bound");
    let port = addr.port();
    let (code, _) = raw(
        addr,
        &get(&format!("gw-07.substation.local:{port}"), "/api/status"),
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = raw(addr, &get("10.9.8.7", "/api/status")).await;
    assert_eq!(code, 200);
    let (code, _) = raw(addr, &get("gw-08.substation.local", "/api/status")).await;
    assert_eq!(code, 421);
    daemon.stop().await;
}

/// A client that sends its headers one byte a second is cut off after the header-read
/// timeout (10 s), not served forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_connection_is_closed_after_the_header_timeout() {
    let (_sim, daemon, _dir) = start(r#"listen = "127.0.0.1:0""#).await;
    let addr = daemon.service_addr().expect("bound");
    let timeout = Limits::default().header_read_timeout;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let request = get(&format!("127.0.0.1:{}", addr.port()), "/api/status");
    let began = Instant::now();
    let mut closed_after = None;
    for b in request.as_bytes().iter().cycle() {
        if s.write_all(&[*b]).await.is_err() {
            closed_after = Some(began.elapsed());
            break;
        }
        // A closed connection reads EOF (or an error) at once.
        let mut buf = [0u8; 512];
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            match r {
                Ok(0) | Err(_) => {
                    closed_after = Some(began.elapsed());
                    break;
                }
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    // hyper may answer 408 before closing.
                    assert!(text.starts_with("HTTP/1.1 408"), "answered: {text}");
                }
            }
        }
        assert!(began.elapsed() < timeout * 3, "never closed");
    }
    let after = closed_after.expect("closed");
    assert!(
        after >= timeout - Duration::from_secs(1) && after < timeout + Duration::from_secs(4),
        "closed after {after:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traces_beyond_the_cap_get_503() {
    let (_sim, daemon, _dir) = start(r#"listen = "127.0.0.1:0""#).await;
    let addr = daemon.service_addr().expect("bound");
    let host = format!("127.0.0.1:{}", addr.port());
    let cap = Limits::default().max_traces;
    let mut open = Vec::new();
    for _ in 0..cap {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(get(&host, "/api/trace").as_bytes())
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("trace head")
            .expect("read");
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(s);
    }
    let (code, text) = raw(addr, &get(&host, "/api/trace")).await;
    assert_eq!(code, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after"), "{text}");
    // A trace that ends frees its place.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(get(&host, "/api/trace").as_bytes())
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap_or(0);
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed trace's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_reads_beyond_the_burst_get_429_with_retry_after() {
    let (_sim, daemon, _dir) = start(r#"listen = "127.0.0.1:0""#).await;
    let addr = daemon.service_addr().expect("bound");
    let host = format!("127.0.0.1:{}", addr.port());
    let json = "Content-Type: application/json\r\n";
    let body = r#"{"meter": "no-such-meter"}"#;
    let burst = Limits::default().read_burst;
    for _ in 0..burst {
        let (code, text) = raw(addr, &post(&host, json, body)).await;
        assert_eq!(code, 404, "{text}");
    }
    let (code, text) = raw(addr, &post(&host, json, body)).await;
    assert_eq!(code, 429, "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, _) = raw(addr, &post(&host, json, body)).await;
    assert_eq!(code, 404, "a token came back after a second");
    daemon.stop().await;
}

/// A one-shot read whose client disconnects is cancelled on the service's side: the handler
/// future is dropped with the connection, and with it the reply's receiver, so the bus task
/// sees `reply.is_closed()` and can skip the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_client_went_away_is_seen_closed_by_the_bus() {
    use std::sync::{Arc, Mutex};

    use crate::bus::task::BusCommand;
    use crate::config::ServiceConfig;
    use crate::service::{Handles, Service, ServiceBus, SuccessBook, prepare};

    // A real daemon lends its uplink handle and a bus health listing meter m1; the bus's
    // command channel is ours, so that the test plays the bus task.
    let (_sim, daemon, _dir) = start(r#"enabled = false"#).await;
    let health = daemon.bus_statuses().into_iter().next().expect("a bus");
    let (commands, mut bus_rx) = tokio::sync::mpsc::channel(8);
    let (frames, _) = tokio::sync::broadcast::channel(16);
    let handles = Handles {
        gateway: "gw-diag".into(),
        started: std::time::SystemTime::now(),
        buses: vec![ServiceBus {
            name: "rtu".into(),
            commands,
            status: Arc::new(Mutex::new(health)),
        }],
        uplink: daemon.uplink().clone(),
        spool: Arc::new(Default::default),
        book: Arc::new(Mutex::new(SuccessBook::new(std::iter::empty()))),
        frames,
        meter_drops: Arc::new(|_| None),
        completeness: Arc::new(Mutex::new(Default::default())),
        control: None,
    };
    let config = ServiceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..ServiceConfig::default()
    };
    let service = Service::start(prepare(&config).expect("prepare"), handles).await;
    let addr = service.addr().expect("bound");

    let mut s = TcpStream::connect(addr).await.expect("connect");
    let body = r#"{"meter": "m1"}"#;
    s.write_all(
        post(
            &format!("127.0.0.1:{}", addr.port()),
            "Content-Type: application/json\r\n",
            body,
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let cmd = tokio::time::timeout(Duration::from_secs(5), bus_rx.recv())
        .await
        .expect("the read reached the bus")
        .expect("a command");
    let BusCommand::ReadNow { meter, reply } = cmd else {
        panic!("expected a one-shot read, got {cmd:?}");
    };
    assert_eq!(meter, "m1");
    assert!(!reply.is_closed(), "the client is still waiting");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !reply.is_closed() {
        assert!(
            Instant::now() < deadline,
            "the reply channel stayed open after the client went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service.stop(Duration::from_millis(200)).await;
    daemon.stop().await;
}
