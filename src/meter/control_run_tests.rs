use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meter_protocols::dlt645::relay::{ControlReply, IdentityReply, STATUS_WORD_3, StatusWord3};
use meter_protocols::dlt645::{
    Address, Dlt645Frame, ErrorWord, Response, SecurityErrorWord, Version,
};

use super::*;
use crate::config::{MeterConfig, ProfileSet};
use crate::meter::control::{ControlCredentials, EsamPayload};

const ADDR: &str = "202107072529";

fn driver(protocol: &str, profile: &str) -> MeterDriver {
    let text = match protocol {
        "modbus-rtu" => format!("protocol = \"{protocol}\"\nunit = 1\nprofile = \"{profile}\"\n"),
        _ => format!("protocol = \"{protocol}\"\naddress = \"{ADDR}\"\nprofile = \"{profile}\"\n"),
    };
    let m: MeterConfig = toml::from_str(&text).unwrap();
    let profiles = ProfileSet::builtin().unwrap();
    MeterDriver::new(&m, profiles.get(profile).unwrap(), "A").unwrap()
}

fn dlt() -> MeterDriver {
    driver("dlt645-2007", "dlt645-single-phase")
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// 2026-12-07T08:10:00Z: 16:10:00 in the meter's +08:00.
fn not_after() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_631_000)
}

fn request(action: RelayAction) -> ControlRequest {
    ControlRequest {
        command_id: "c1".into(),
        action,
        not_after: not_after(),
        credentials: Some(ControlCredentials {
            level: 0x02,
            password: [0x12, 0x34, 0x56],
            operator: [0x12, 0x34, 0x56, 0x78],
        }),
        esam: None,
        read_back_for: Duration::from_secs(5),
        read_back_only: false,
    }
}

fn issued() -> SystemTime {
    not_after() - Duration::from_secs(600)
}

fn address() -> Address {
    ADDR.parse().unwrap()
}

fn control_reply(r: ControlReply) -> Reply {
    Reply::Dlt645(r.to_frame(address()))
}

fn status(word: u16) -> Reply {
    Reply::Dlt645(
        Response::ReadData {
            di: STATUS_WORD_3,
            payload: StatusWord3(word).to_payload().to_vec(),
            more_follows: false,
        }
        .to_frame(address(), Version::V2007),
    )
}

fn raw(r: &Reply) -> Vec<u8> {
    match r {
        Reply::Dlt645(f) => f.to_bytes(0),
        _ => Vec::new(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The step to send now, or a panic saying what came instead.
fn send(run: &mut ControlRun, now: Duration) -> Step {
    match run.next(now) {
        ControlNext::Send(s) => s,
        other => panic!("expected a send at {now:?}, got {other:?}"),
    }
}

fn answer(run: &mut ControlRun, s: &Step, r: Reply, now: Duration) {
    run.on_reply(&r, &s.bytes, &raw(&r), issued(), now);
}

fn finished(run: &mut ControlRun, now: Duration) -> ControlOutcome {
    match run.next(now) {
        ControlNext::Finished(o) => o,
        other => panic!("expected the end, got {other:?}"),
    }
}

fn function_of(s: &Step) -> u8 {
    s.bytes.get(8).copied().unwrap_or(0)
}

const OFF: u16 = 0x0050; // relay open, commanded trip
const ON: u16 = 0x0000;

#[test]
fn plaintext_trip_is_sent_with_the_deadline_in_the_meters_zone_and_read_back() {
    let mut run = ControlRun::new(&dlt(), request(RelayAction::Trip), issued()).unwrap();
    let s = send(&mut run, secs(0));
    // Level 02, password 123456, operator 12345678, N1 1A, deadline 2026-12-07 16:10:00
    // (+08:00): the vector worked by hand in meter_protocols::dlt645::relay's tests.
    assert_eq!(
        s.bytes,
        hex("68 29 25 07 07 21 20 68 1C 10 35 89 67 45 AB 89 67 45 4D 33 33 43 49 3A 45 59 FA 16")
    );
    assert!(run.sends_command_next());
    answer(&mut run, &s, control_reply(ControlReply::Accepted), secs(0));
    let read = send(&mut run, secs(0));
    assert_eq!(function_of(&read), 0x11);
    answer(&mut run, &read, status(OFF), secs(0));
    let ControlOutcome::Done { relay, frames } = finished(&mut run, secs(0)) else {
        panic!("not done");
    };
    assert_eq!(relay.state, RelayState::Off);
    assert_eq!(relay.commanded, RelayState::Off);
    assert_eq!(frames.len(), 4);
    assert!(frames[0].sent && !frames[1].sent);
    // The password and operator code are not in the record.
    assert!(
        frames[0].hex.contains("1C 10 35 33 33 33 33 33 33 33 4D"),
        "{}",
        frames[0].hex
    );
}

#[test]
fn a_timeout_gets_exactly_one_resend_then_the_read_back_decides() {
    let mut run = ControlRun::new(&dlt(), request(RelayAction::Close), issued()).unwrap();
    let first = send(&mut run, secs(0));
    run.on_failure("no reply within 1s", &first.bytes, issued(), secs(1));
    let second = send(&mut run, secs(1));
    assert_eq!(first.bytes, second.bytes);
    run.on_failure("no reply within 1s", &second.bytes, issued(), secs(2));
    // No third send: status reads from now on, every second, for read_back_for (5 s).
    let mut sends_1c = 0;
    let mut now = secs(2);
    let outcome = loop {
        match run.next(now) {
            ControlNext::Send(s) => {
                if function_of(&s) == 0x1C {
                    sends_1c += 1;
                }
                answer(&mut run, &s, status(OFF), now);
            }
            ControlNext::WaitUntil(at) => {
                assert!(at > now && at - now <= READ_BACK_EVERY);
                now = at;
            }
            ControlNext::Finished(o) => break o,
        }
    };
    assert_eq!(sends_1c, 0);
    let ControlOutcome::Unknown {
        reason,
        relay,
        frames,
    } = outcome
    else {
        panic!("expected unknown");
    };
    assert!(reason.contains("sent twice"), "{reason}");
    assert_eq!(relay.map(|r| r.state), Some(RelayState::Off));
    // 2 sends without reply + 6 reads (at 2, 3, .. 7 s) with replies.
    assert_eq!(frames.len(), 2 + 6 * 2);
    assert!(now <= secs(2 + 5));
}

#[test]
fn a_resend_that_is_answered_is_read_back_and_done() {
    let mut run = ControlRun::new(&dlt(), request(RelayAction::Close), issued()).unwrap();
    let first = send(&mut run, secs(0));
    run.on_failure("no reply", &first.bytes, issued(), secs(1));
    let second = send(&mut run, secs(1));
    answer(
        &mut run,
        &second,
        control_reply(ControlReply::Accepted),
        secs(1),
    );
    let read = send(&mut run, secs(1));
    answer(&mut run, &read, status(OFF), secs(1));
    // Not yet on: wait a second, read again.
    let ControlNext::WaitUntil(at) = run.next(secs(1)) else {
        panic!("expected a wait");
    };
    assert_eq!(at, secs(2));
    let read = send(&mut run, at);
    answer(&mut run, &read, status(ON), at);
    assert!(matches!(
        finished(&mut run, at),
        ControlOutcome::Done { .. }
    ));
}

#[test]
fn an_abnormal_reply_fails_with_the_error_byte_and_the_relay_as_read() {
    let mut run = ControlRun::new(&dlt(), request(RelayAction::Trip), issued()).unwrap();
    let s = send(&mut run, secs(0));
    answer(
        &mut run,
        &s,
        control_reply(ControlReply::Refused(ErrorWord(0x04))),
        secs(0),
    );
    assert!(!run.sends_command_next());
    let read = send(&mut run, secs(0));
    assert_eq!(function_of(&read), 0x11);
    answer(&mut run, &read, status(ON), secs(0));
    let ControlOutcome::Failed {
        reason,
        error_byte,
        relay,
        frames,
    } = finished(&mut run, secs(0))
    else {
        panic!("expected failed");
    };
    assert_eq!(error_byte, Some(0x04));
    assert!(reason.contains("password error/unauthorised"), "{reason}");
    assert_eq!(relay.map(|r| r.state), Some(RelayState::On));
    assert_eq!(frames.len(), 4);
}

#[test]
fn accepted_but_never_shown_fails_and_a_silent_meter_is_unknown() {
    // Accepted, the relay stays on: failed after read_back_for.
    let mut run = ControlRun::new(&dlt(), request(RelayAction::Trip), issued()).unwrap();
    let s = send(&mut run, secs(0));
    answer(&mut run, &s, control_reply(ControlReply::Accepted), secs(0));
    let mut now = secs(0);
    let outcome = loop {
        match run.next(now) {
            ControlNext::Send(s) => answer(&mut run, &s, status(ON), now),
            ControlNext::WaitUntil(at) => now = at,
            ControlNext::Finished(o) => break o,
        }
    };
    assert!(
        matches!(&outcome, ControlOutcome::Failed { reason, error_byte: None, relay: Some(_), .. } if reason.contains("did not show it")),
        "{outcome:?}"
    );
    // Accepted, then silence: unknown.
    let mut run = ControlRun::new(&dlt(), request(RelayAction::Trip), issued()).unwrap();
    let s = send(&mut run, secs(0));
    answer(&mut run, &s, control_reply(ControlReply::Accepted), secs(0));
    let mut now = secs(0);
    let outcome = loop {
        match run.next(now) {
            ControlNext::Send(s) => run.on_failure("no reply within 1s", &s.bytes, issued(), now),
            ControlNext::WaitUntil(at) => now = at,
            ControlNext::Finished(o) => break o,
        }
    };
    assert!(
        matches!(&outcome, ControlOutcome::Unknown { relay: None, reason, .. } if reason.contains("no reply within 1s")),
        "{outcome:?}"
    );
}

#[test]
fn nothing_is_sent_to_1997_or_modbus_meters_without_credentials_or_once_expired() {
    for d in [
        driver("dlt645-1997", "dlt645-1997-basic"),
        driver("modbus-rtu", "eastron-sdm120"),
    ] {
        let Err(ControlOutcome::Failed { reason, frames, .. }) =
            ControlRun::new(&d, request(RelayAction::Close), issued())
        else {
            panic!("not refused");
        };
        assert!(
            reason.contains("no remote control") && frames.is_empty(),
            "{reason}"
        );
    }
    let mut no_creds = request(RelayAction::Trip);
    no_creds.credentials = None;
    assert!(ControlRun::new(&dlt(), no_creds, issued()).is_err());
    let Err(ControlOutcome::Failed { reason, .. }) =
        ControlRun::new(&dlt(), request(RelayAction::Trip), not_after())
    else {
        panic!("an expired command was not refused");
    };
    assert!(reason.contains("not_after passed"), "{reason}");
    let mut cipher_level = request(RelayAction::Trip);
    if let Some(c) = cipher_level.credentials.as_mut() {
        c.level = 0x98;
    }
    assert!(ControlRun::new(&dlt(), cipher_level, issued()).is_err());
}

#[test]
fn read_back_only_and_read_relay_never_send_the_command() {
    for (mut req, action) in [
        (request(RelayAction::Trip), RelayAction::Trip),
        (request(RelayAction::ReadRelay), RelayAction::ReadRelay),
    ] {
        req.read_back_only = action == RelayAction::Trip;
        // Even past not_after: reading is always allowed.
        let mut run = ControlRun::new(&dlt(), req, not_after() + secs(60)).unwrap();
        assert!(!run.sends_command_next());
        let s = send(&mut run, secs(0));
        assert_eq!(function_of(&s), 0x11);
        answer(&mut run, &s, status(OFF), secs(0));
        let ControlOutcome::Done { relay, frames } = finished(&mut run, secs(0)) else {
            panic!("not done");
        };
        assert_eq!(relay.word, OFF);
        assert_eq!(frames.len(), 2);
    }
}

#[test]
fn close_allow_is_done_when_commanded_on_and_alarm_and_keep_power_by_their_bits() {
    let st = |w| relay_status(StatusWord3(w));
    // Close allowed: commanded close (bit 6 clear), relay still open until the button.
    assert!(shows(RelayAction::CloseAllow, &st(0x0010)));
    assert!(!shows(RelayAction::CloseAllow, &st(0x0050)));
    assert!(!shows(RelayAction::Close, &st(0x0010)));
    assert!(shows(RelayAction::Alarm, &st(0x0080)));
    assert!(shows(RelayAction::AlarmRelease, &st(0x0000)));
    assert!(shows(RelayAction::KeepPower, &st(0x1000)));
    assert!(!shows(RelayAction::KeepPowerRelease, &st(0x1000)));
}

#[test]
fn esam_identity_first_then_the_worked_example_passed_through() {
    let worked = "68 11 11 11 11 11 11 68 1C 1C CB 33 33 33 AB 89 67 45 1E 64 F4 36 A4 F5 83 0A 0B 3D FC B1 13 77 1D 00 39 DD 8E B9 7D 16";
    let cipher: Vec<u8> = hex("1E 64 F4 36 A4 F5 83 0A 0B 3D FC B1 13 77 1D 00 39 DD 8E B9")
        .into_iter()
        .map(|b| b.wrapping_sub(0x33))
        .collect();
    let m: MeterConfig = toml::from_str(
        "protocol = \"dlt645-2007\"\naddress = \"111111111111\"\nprofile = \"dlt645-single-phase\"\n",
    )
    .unwrap();
    let profiles = ProfileSet::builtin().unwrap();
    let d = MeterDriver::new(&m, profiles.get("dlt645-single-phase").unwrap(), "A").unwrap();
    let a: Address = "111111111111".parse().unwrap();
    let mut req = request(RelayAction::Trip);
    // The operator code in clear comes from the credentials; the level is 98H.
    req.credentials = Some(ControlCredentials {
        level: 0x98,
        password: [0, 0, 0],
        operator: [0x12, 0x34, 0x56, 0x78],
    });
    req.esam = Some(EsamPayload {
        identity: Some(vec![0x11; 28]),
        command: cipher,
    });
    let mut run = ControlRun::new(&d, req.clone(), issued()).unwrap();
    let id = send(&mut run, secs(0));
    assert_eq!(function_of(&id), 0x03);
    let ok = IdentityReply::Accepted {
        r2_and_serial: None,
        data: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    };
    let r = Reply::Dlt645(ok.to_frame(a));
    run.on_reply(&r, &id.bytes, &raw(&r), issued(), secs(0));
    let cmd = send(&mut run, secs(0));
    assert_eq!(cmd.bytes, hex(worked));

    // Identity refused: the command is never sent.
    let mut run = ControlRun::new(&d, req, issued()).unwrap();
    let id = send(&mut run, secs(0));
    let refused = IdentityReply::RefusedSecurity(SecurityErrorWord([0x00, 0x08]));
    let r = Reply::Dlt645(refused.to_frame(a));
    run.on_reply(&r, &id.bytes, &raw(&r), issued(), secs(0));
    let read = send(&mut run, secs(0));
    assert_eq!(function_of(&read), 0x11);
    run.on_failure("no reply", &read.bytes, issued(), secs(1));
    let ControlOutcome::Failed { reason, .. } = finished(&mut run, secs(1)) else {
        panic!("not failed");
    };
    assert!(reason.contains("identity authentication failed") && reason.contains("not sent"));
}

#[test]
fn meter_time_converts_to_the_meters_zone() {
    let t = meter_time(not_after(), UtcOffset::CHINA).unwrap();
    assert_eq!(t.to_string(), "2026-12-07 16:10:00");
    assert_eq!(
        meter_time(not_after(), UtcOffset::UTC).unwrap().to_string(),
        "2026-12-07 08:10:00"
    );
    assert_eq!(meter_time(UNIX_EPOCH, UtcOffset::UTC), None);
    let _ = Dlt645Frame::scan(&[]);
}

#[test]
fn debug_output_holds_no_credentials() {
    let run = ControlRun::new(&dlt(), request(RelayAction::Trip), issued()).unwrap();
    let text = format!("{run:?}");
    // Password 123456 goes as 56 34 12 (+33H: 89 67 45): neither form, nor the operator code.
    for needle in ["86, 52, 18", "137, 103, 69", "0x56", "56 34 12", "89 67 45"] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
    assert!(text.contains("Trip"));
}
