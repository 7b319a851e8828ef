//! The control room against a real spool and a fake bus (a channel the test answers).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use tokio::sync::{mpsc, oneshot};

use super::verify::{self, MeterInfo, Rejection, VerifyContext};
use super::*;
use crate::clock::gateway::ClockTrust;
use crate::clock::rfc3339_ms;
use crate::config::{Config, Protocol};
use crate::ingest::{FreshRows, MessageKind};
use crate::meter::control::{ControlOutcome, ControlRequest, RelayState, RelayStatus, WireFrame};
use crate::spool::{Spool, SpoolOptions};
use crate::uplink::IncomingCommand;

/// RFC 8032 test 1 secret key; its public key is `11qYAYKx…URo=`.
const SECRET: [u8; 32] = [
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];
const PUBLIC_B64: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
const M1: &str = "000000123456";
const OLD: &str = "000000000097";

fn now_ms() -> i64 {
    crate::clock::wall_clock_ms()
}

fn body(id: &str, meter: &str, action: &str, issued: i64, not_after: i64, extra: &str) -> String {
    format!(
        "{{\"command_id\":\"{id}\",\"gateway\":\"gw-01\",\"meter\":\"{meter}\",\"action\":\"{action}\",\
         \"issued_at\":\"{}\",\"not_after\":\"{}\",\"override_policy\":false{extra}}}",
        rfc3339_ms(issued),
        rfc3339_ms(not_after)
    )
}

fn sign_with(key: &SigningKey, key_id: &str, body: &str) -> Vec<u8> {
    let sig =
        base64::engine::general_purpose::STANDARD.encode(key.sign(body.as_bytes()).to_bytes());
    serde_json::to_vec(&serde_json::json!({
        "schema": "meterd.command.v1", "key_id": key_id, "body": body, "signature": sig
    }))
    .unwrap()
}

fn signed(body: &str) -> Vec<u8> {
    sign_with(&SigningKey::from_bytes(&SECRET), "core-1", body)
}

fn cmd(id: &str, meter: &str, action: &str) -> Vec<u8> {
    let n = now_ms();
    signed(&body(id, meter, action, n - 1000, n + 600_000, ""))
}

fn topic(meter: &str) -> String {
    format!("meterd/gw-01/meters/{meter}/commands")
}

fn config(dir: &Path, control: &str) -> Config {
    let cred = dir.join("cred.toml");
    std::fs::write(
        &cred,
        "[default]\nlevel = 2\npassword = \"123456\"\noperator = \"00000001\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cred, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = format!(
        r#"
gateway = "gw-01"
[control]
credentials = "cred.toml"
{control}
[[control.key]]
key_id = "core-1"
public_key = "{PUBLIC_B64}"
[[bus]]
name = "a"
transport = "serial"
port = "/dev/null"
[[bus.meter]]
protocol = "dlt645-2007"
address = "{M1}"
profile = "dlt645-three-phase"
[[bus.meter]]
protocol = "dlt645-1997"
address = "{OLD}"
profile = "dlt645-1997-basic"
[[bus.meter]]
id = "mb"
protocol = "modbus-rtu"
unit = 3
profile = "eastron-sdm630"
"#
    );
    let path = dir.join("meterd.toml");
    Config::from_text(&path, &text).map(|(c, _)| c).unwrap()
}

/// A fake bus: hands each request to the test.
struct FakeBus(mpsc::UnboundedSender<(String, ControlRequest, oneshot::Sender<ControlOutcome>)>);

impl MeterBuses for FakeBus {
    fn control(
        &self,
        _bus: &str,
        meter: &str,
        request: ControlRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<oneshot::Receiver<ControlOutcome>, String>>
    {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .0
            .send((meter.to_owned(), request, tx))
            .map_err(|_| "gone".to_owned());
        Box::pin(async move { sent.map(|()| rx) })
    }
}

type Requests = mpsc::UnboundedReceiver<(String, ControlRequest, oneshot::Sender<ControlOutcome>)>;

struct Rig {
    _dir: tempfile::TempDir,
    spool: Arc<Mutex<Spool>>,
    tx: mpsc::Sender<IncomingCommand>,
    requests: Requests,
    view: ControlView,
    task: tokio::task::JoinHandle<()>,
}

fn start_in(dir: tempfile::TempDir, control: &str, clock: ClockTrust) -> Rig {
    let cfg = config(dir.path(), control);
    let setup = ControlSetup::from_config(&cfg)
        .unwrap()
        .unwrap()
        .with_clock(clock);
    let spool = Arc::new(Mutex::new(
        Spool::open(dir.path().join("spool.sqlite"), SpoolOptions::new(1 << 20)).unwrap(),
    ));
    let (tx, rx) = mpsc::channel(16);
    let (btx, requests) = mpsc::unbounded_channel();
    let view = ControlView::new(setup.controllable());
    let task = tokio::spawn(run(
        setup,
        rx,
        spool.clone(),
        FreshRows::default(),
        Box::new(|| {}),
        Arc::new(FakeBus(btx)),
        view.clone(),
    ));
    Rig {
        _dir: dir,
        spool,
        tx,
        requests,
        view,
        task,
    }
}

fn start(control: &str) -> Rig {
    start_in(tempfile::tempdir().unwrap(), control, ClockTrust::Trusted)
}

impl Rig {
    async fn send(&self, meter: &str, payload: Vec<u8>, retain: bool) {
        self.tx
            .send(IncomingCommand {
                topic: topic(meter),
                payload,
                retain,
                at: SystemTime::now(),
            })
            .await
            .unwrap();
    }

    /// The results in the outbox, in order, each checked against the published schema.
    async fn results(&self, n: usize) -> Vec<serde_json::Value> {
        let schema = result_schema();
        for _ in 0..200 {
            let rows = crate::sync::lock(&self.spool).pending(None, 100).unwrap();
            let rows: Vec<_> = rows
                .into_iter()
                .filter(|r| r.kind == MessageKind::CommandResult)
                .collect();
            if rows.len() >= n {
                return rows
                    .iter()
                    .map(|r| {
                        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                        let errors: Vec<String> =
                            schema.iter_errors(&v).map(|e| e.to_string()).collect();
                        assert!(errors.is_empty(), "{v}: {errors:?}");
                        v
                    })
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} results");
    }

    /// Answers the next bus request with `word` read back.
    async fn answer(&mut self, word: u16) -> ControlRequest {
        let (_, req, reply) = tokio::time::timeout(Duration::from_secs(5), self.requests.recv())
            .await
            .unwrap()
            .unwrap();
        let state = if word & 0x10 != 0 {
            RelayState::Off
        } else {
            RelayState::On
        };
        let _ = reply.send(ControlOutcome::Done {
            relay: RelayStatus {
                state,
                commanded: state,
                pre_trip_alarm: word & 0x80 != 0,
                keep_power: false,
                word,
            },
            frames: vec![
                WireFrame {
                    sent: true,
                    at: SystemTime::now(),
                    hex: "68 AA 16".into(),
                },
                WireFrame {
                    sent: false,
                    at: SystemTime::now(),
                    hex: "68 9C 16".into(),
                },
            ],
        });
        req
    }
}

fn result_schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/command-result.v1.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// The fenced block after `marker` in docs/mqtt.md.
fn doc_block(marker: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mqtt.md");
    let text = std::fs::read_to_string(path).unwrap();
    let after = &text[text.find(marker).unwrap()..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_owned()
}

#[test]
fn the_signed_example_in_the_docs_verifies_and_a_changed_byte_does_not() {
    let out = doc_block("<!-- sign_command.out -->");
    let mut lines = out.lines();
    let public = lines.next().unwrap().strip_prefix("public_key = ").unwrap();
    let message = lines.next().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(
        &base64::engine::general_purpose::STANDARD
            .decode(public)
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let keys = [("billing-core-2026".to_owned(), key)]
        .into_iter()
        .collect();
    let meters = [(
        M1.to_owned(),
        MeterInfo {
            bus: "a".into(),
            protocol: Protocol::Dlt645_2007,
            address: Some(M1.into()),
            profile: "p".into(),
        },
    )]
    .into_iter()
    .collect();
    let cx = VerifyContext {
        gateway: "gw-01",
        keys: &keys,
        meters: &meters,
        clock: Ok(()),
        now_ms: crate::clock::parse_rfc3339("2026-12-07T08:05:00Z").unwrap(),
        clock_skew_ms: 30_000,
        max_validity_ms: 3_600_000,
    };
    let v = verify::verify(message.as_bytes(), false, M1, &cx).unwrap();
    assert_eq!(v.action, crate::meter::control::RelayAction::Close);
    assert_eq!(v.body.command_id, "7d7c5a0e-1f2b-4c1d-9a7e-3b8f0c2d4e61");
    // One character of the body changed: the signature no longer holds.
    let forged = message.replace("\\\"close\\\"", "\\\"trip\\\"");
    assert_ne!(forged, message);
    assert_eq!(
        verify::verify(forged.as_bytes(), false, M1, &cx),
        Err(Rejection::BadSignature)
    );
}

fn reason(v: &serde_json::Value) -> String {
    v["reason"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn alarm_then_trip_after_the_notice_then_close() {
    let mut rig = start("trip_notice = \"0s\"");
    rig.send(M1, cmd("c1", M1, "alarm"), false).await;
    let req = rig.answer(0x80).await;
    assert_eq!(req.action, crate::meter::control::RelayAction::Alarm);
    assert!(!req.read_back_only);
    let creds = req.credentials.unwrap();
    assert_eq!((creds.level, creds.password), (2, [0x12, 0x34, 0x56]));
    let r = rig.results(1).await;
    assert_eq!(r[0]["outcome"], "done");
    assert_eq!(r[0]["relay"]["pre_trip_alarm"], true);
    assert_eq!(r[0]["frames"], serde_json::json!(["68 AA 16", "68 9C 16"]));
    rig.send(M1, cmd("c2", M1, "trip"), false).await;
    rig.answer(0x10 | 0x40).await;
    let r = rig.results(2).await;
    assert_eq!(
        (r[1]["outcome"].as_str(), r[1]["relay"]["state"].as_str()),
        (Some("done"), Some("off"))
    );
    rig.send(M1, cmd("c3", M1, "close"), false).await;
    rig.answer(0).await;
    let r = rig.results(3).await;
    assert_eq!(r[2]["relay"]["state"], "on");
    let snap = rig.view.snapshot();
    let m = snap.meters.iter().find(|m| m.meter == M1).unwrap();
    assert_eq!(
        (m.action.as_deref(), m.outcome.as_deref()),
        (Some("close"), Some("done"))
    );
    assert_eq!(m.relay.as_ref().map(|r| r.state.as_str()), Some("on"));
    let audit = crate::sync::lock(&rig.spool)
        .audit_lines(Some(M1), 100)
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|l| l.what == "frame-sent" && l.detail == "68 AA 16")
    );
    assert_eq!(audit.iter().filter(|l| l.what == "result").count(), 3);
    drop(rig.tx);
    rig.task.await.unwrap();
}

#[tokio::test]
async fn a_trip_before_the_notice_is_refused_and_published() {
    let mut rig = start("trip_notice = \"1h\"");
    rig.send(M1, cmd("t0", M1, "trip"), false).await;
    rig.send(M1, cmd("a1", M1, "alarm"), false).await;
    rig.answer(0x80).await;
    rig.send(M1, cmd("t1", M1, "trip"), false).await;
    let r = rig.results(3).await;
    assert_eq!(r[0]["outcome"], "rejected");
    assert!(reason(&r[0]).contains("no alarm"), "{}", r[0]);
    assert!(reason(&r[2]).starts_with("policy: trip notice"), "{}", r[2]);
    assert!(rig.requests.try_recv().is_err(), "nothing reached the bus");
    // The refused id is burnt: sending it again is a replay.
    rig.send(M1, cmd("t1", M1, "trip"), false).await;
    let r = rig.results(4).await;
    assert!(reason(&r[3]).starts_with("replayed"), "{}", r[3]);
}

#[tokio::test]
async fn every_rejection_is_published_with_its_reason() {
    let mut rig = start(
        "trip_notice = \"0s\"\nquiet_days = [\"sun\",\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\"]",
    );
    let n = now_ms();
    let other_key = SigningKey::from_bytes(&[7u8; 32]);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        (M1, b"{not json".to_vec(), false, "malformed"),
        (M1, cmd("r1", M1, "alarm"), true, "retained"),
        (
            M1,
            sign_with(
                &other_key,
                "core-1",
                &body("b1", M1, "alarm", n, n + 60_000, ""),
            ),
            false,
            "bad-signature",
        ),
        (
            M1,
            sign_with(
                &other_key,
                "core-9",
                &body("b2", M1, "alarm", n, n + 60_000, ""),
            ),
            false,
            "unknown-key",
        ),
        (
            M1,
            signed(&body("e1", M1, "alarm", n - 120_000, n - 60_000, "")),
            false,
            "expired",
        ),
        (
            M1,
            signed(&body("f1", M1, "alarm", n + 120_000, n + 180_000, "")),
            false,
            "not-yet-valid",
        ),
        (
            M1,
            signed(&body("l1", M1, "alarm", n, n + 86_400_000, "")),
            false,
            "bad-validity",
        ),
        (M1, cmd("o1", "000000654321", "alarm"), false, "wrong-meter"),
        (
            "000000654321",
            cmd("o2", "000000654321", "alarm"),
            false,
            "not-a-meter",
        ),
        (
            "999999999999",
            cmd("o3", "999999999999", "trip"),
            false,
            "not-a-meter",
        ),
        (
            "AAAAAAAAAAAA",
            cmd("o4", "AAAAAAAAAAAA", "trip"),
            false,
            "not-a-meter",
        ),
        (M1, cmd("u1", M1, "explode"), false, "unknown-action"),
        (OLD, cmd("v1", OLD, "alarm"), false, "unsupported"),
        ("mb", cmd("v2", "mb", "alarm"), false, "unsupported"),
        (M1, cmd("q1", M1, "trip"), false, "policy"),
        (
            M1,
            signed(
                &body("p1", M1, "alarm", n, n + 60_000, "")
                    .replace("\"override_policy\":false", "\"override_policy\":true"),
            ),
            false,
            "policy",
        ),
    ];
    // Clearing a retained message (an empty payload) is not a command: no result.
    rig.send(M1, Vec::new(), false).await;
    let mut gw = body("g1", M1, "alarm", n, n + 60_000, "");
    gw = gw.replace("gw-01", "gw-02");
    rig.send(M1, signed(&gw), false).await;
    for (meter, payload, retain, _) in &cases {
        rig.send(meter, payload.clone(), *retain).await;
    }
    let r = rig.results(cases.len() + 1).await;
    assert!(reason(&r[0]).starts_with("wrong-gateway"), "{}", r[0]);
    for (i, (meter, _, _, code)) in cases.iter().enumerate() {
        let got = &r[i + 1];
        assert_eq!(got["outcome"], "rejected", "{got}");
        assert!(
            reason(got).starts_with(code),
            "case {i} expected {code}: {got}"
        );
        assert_eq!(got["meter"], *meter);
        assert_eq!(got["schema"], "meterd.command-result.v1");
        assert!(got["relay"].is_null());
    }
    assert!(rig.requests.try_recv().is_err(), "nothing reached the bus");
    // A forged message did not burn its id: the genuine b1 is accepted.
    rig.send(M1, cmd("b1", M1, "alarm"), false).await;
    rig.answer(0x80).await;
    let r = rig.results(cases.len() + 2).await;
    assert_eq!(r[cases.len() + 1]["outcome"], "done");
    let audit = crate::sync::lock(&rig.spool)
        .audit_lines(None, 1000)
        .unwrap();
    assert_eq!(
        audit.iter().filter(|l| l.what == "rejected").count(),
        cases.len() + 1
    );
}

#[test]
fn check_config_describes_the_setup_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "quiet_hours = [\"17:00-08:00\"]");
    let text = ControlSetup::from_config(&cfg).unwrap().unwrap().describe();
    assert!(
        text.contains("keys core-1; 1 controllable meters (000000123456)"),
        "{text}"
    );
    assert!(
        text.contains("no trips in 17:00-08:00") && text.contains("at +08:00"),
        "{text}"
    );
    assert!(
        !text.contains("123456\"") && !text.contains("00000001"),
        "{text}"
    );
    // A credentials file others can read stops the start (and check-config).
    let cred = dir.path().join("cred.toml");
    std::fs::set_permissions(&cred, std::os::unix::fs::PermissionsExt::from_mode(0o604)).unwrap();
    let e = ControlSetup::from_config(&cfg).unwrap_err().to_string();
    assert!(e.contains("0604"), "{e}");
}

#[tokio::test]
async fn restores_are_never_refused_by_policy() {
    let mut rig = start("rate_limit = 1\nquiet_hours = [\"00:00-23:59\"]");
    rig.send(M1, cmd("a", M1, "alarm"), false).await;
    rig.answer(0x80).await;
    rig.send(M1, cmd("b", M1, "alarm_release"), false).await;
    rig.send(M1, cmd("c", M1, "close_allow"), false).await;
    rig.send(M1, cmd("d", M1, "close"), false).await;
    rig.answer(0).await;
    rig.answer(0).await;
    let r = rig.results(4).await;
    let by_id = |id: &str| r.iter().find(|v| v["command_id"] == id).unwrap().clone();
    assert!(reason(&by_id("b")).contains("rate limit"));
    assert_eq!(by_id("c")["outcome"], "done");
    assert_eq!(by_id("d")["outcome"], "done");
}

#[tokio::test]
async fn nothing_is_accepted_while_the_clock_is_unsynchronised() {
    let rig = start_in(tempfile::tempdir().unwrap(), "", ClockTrust::Never);
    rig.send(M1, cmd("c", M1, "close"), false).await;
    let r = rig.results(1).await;
    assert!(
        reason(&r[0]).starts_with("clock-unsynchronised"),
        "{}",
        r[0]
    );
}

#[tokio::test]
async fn a_command_in_flight_at_a_crash_is_read_back_never_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let mut rig = start_in(dir, "trip_notice = \"0s\"", ClockTrust::Trusted);
    rig.send(M1, cmd("k1", M1, "alarm"), false).await;
    // The bus has it; the daemon dies before the outcome (the reply is never sent).
    let (_, req, reply) = rig.requests.recv().await.unwrap();
    assert!(!req.read_back_only);
    rig.task.abort();
    drop(reply);
    let Rig {
        _dir: dir, spool, ..
    } = rig;
    // Wait for the aborted task to let go of the spool, then "restart".
    drop(spool);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(dir.path(), path);
    let mut rig = start_in(dir, "trip_notice = \"0s\"", ClockTrust::Trusted);
    let req = rig.answer(0x80).await;
    assert!(req.read_back_only, "only read back after a restart");
    assert!(req.credentials.is_none() && req.esam.is_none());
    let r = rig.results(1).await;
    assert_eq!(r[0]["command_id"], "k1");
    assert_eq!(r[0]["outcome"], "done");
    assert!(reason(&r[0]).contains("not sent again"), "{}", r[0]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), rig.requests.recv())
            .await
            .is_err()
    );
}

#[test]
fn verify_parses_without_panicking_on_junk() {
    let keys = Default::default();
    let meters = [(
        M1.to_owned(),
        MeterInfo {
            bus: "a".into(),
            protocol: Protocol::Dlt645_2007,
            address: Some(M1.into()),
            profile: "p".into(),
        },
    )]
    .into_iter()
    .collect();
    let cx = VerifyContext {
        gateway: "gw-01",
        keys: &keys,
        meters: &meters,
        clock: Ok(()),
        now_ms: 0,
        clock_skew_ms: 0,
        max_validity_ms: 1,
    };
    for junk in [
        &b""[..],
        b"null",
        b"[]",
        b"{\"schema\":1}",
        b"{\"schema\":\"meterd.command.v1\",\"key_id\":\"x\",\"body\":\"{\",\"signature\":\"!!\"}",
        &[0xff, 0xfe, 0x00],
    ] {
        assert!(verify::verify(junk, false, M1, &cx).is_err());
        let _ = verify::claimed(junk);
    }
    assert_eq!(
        verify::topic_meter("meterd/gw-01/meters/m1/commands", "meterd", "gw-01"),
        Some("m1")
    );
    for bad in [
        "meterd/gw-02/meters/m1/commands",
        "meterd/gw-01/meters//commands",
        "meterd/gw-01/meters/a/b/commands",
        "other/gw-01/meters/m1/commands",
    ] {
        assert_eq!(verify::topic_meter(bad, "meterd", "gw-01"), None, "{bad}");
    }
    assert_eq!(
        Rejection::Replayed.reason(),
        "replayed: command_id was already used"
    );
}

#[tokio::test]
async fn a_flood_of_unverified_messages_is_audited_but_publishes_a_bounded_number_of_results() {
    // Not across a minute boundary (the cap counts per wall-clock minute).
    let into_minute = now_ms() % 60_000;
    if into_minute > 50_000 {
        tokio::time::sleep(Duration::from_millis((60_100 - into_minute) as u64)).await;
    }
    let rig = start("");
    let n = super::task::UNVERIFIED_RESULTS_PER_MINUTE as usize;
    for _ in 0..n + 20 {
        rig.send(M1, b"junk".to_vec(), false).await;
    }
    // A verified command still gets its result after the flood.
    rig.send(M1, cmd("after", M1, "trip"), false).await;
    let r = rig.results(n + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r2 = rig.results(n + 1).await;
    assert_eq!(r2.len(), r.len());
    assert_eq!(
        r.len(),
        n + 1,
        "the cap's worth of rejections, then the verified command"
    );
    assert!(r.iter().any(|v| v["command_id"] == "after"));
    let audit = crate::sync::lock(&rig.spool)
        .audit_lines(None, 10_000)
        .unwrap();
    assert_eq!(
        audit.iter().filter(|l| l.what == "rejected").count(),
        n + 21
    );
}

mod props {
    use proptest::prelude::*;

    use super::*;

    fn cx_parts() -> (
        std::collections::BTreeMap<String, ed25519_dalek::VerifyingKey>,
        std::collections::BTreeMap<String, MeterInfo>,
    ) {
        let key = SigningKey::from_bytes(&SECRET).verifying_key();
        let keys = [("core-1".to_owned(), key)].into_iter().collect();
        let meters = [(
            M1.to_owned(),
            MeterInfo {
                bus: "a".into(),
                protocol: Protocol::Dlt645_2007,
                address: Some(M1.into()),
                profile: "p".into(),
            },
        )]
        .into_iter()
        .collect();
        (keys, meters)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// No input panics; a message changed anywhere is refused, or still carries exactly
        /// the body that was signed (a change outside the signed text, e.g. whitespace).
        #[test]
        fn any_bytes_and_any_one_byte_change_are_handled(
            junk in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<prop::sample::Index>(),
            to in any::<u8>(),
        ) {
            let (keys, meters) = cx_parts();
            let n = 1_796_616_000_000;
            let cx = VerifyContext {
                gateway: "gw-01",
                keys: &keys,
                meters: &meters,
                clock: Ok(()),
                now_ms: n,
                clock_skew_ms: 30_000,
                max_validity_ms: 3_600_000,
            };
            let _ = verify::verify(&junk, false, M1, &cx);
            let _ = verify::claimed(&junk);
            let body = body("p1", M1, "trip", n - 1000, n + 60_000, "");
            let good = signed(&body);
            prop_assert!(verify::verify(&good, false, M1, &cx).is_ok());
            let mut bad = good.clone();
            let i = at.index(bad.len());
            bad[i] = to;
            if let Ok(v) = verify::verify(&bad, false, M1, &cx) {
                prop_assert_eq!(v.body_text, body);
            }
        }
    }
}
