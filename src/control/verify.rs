//! Authenticity of a `meterd.command.v1` message: pure functions, no I/O, `now` passed in.
//!
//! The order of the checks matters: nothing in `body` is trusted before its signature is
//! verified with a configured key, so a forged message can neither choose which check it
//! fails nor burn a `command_id` (only verified commands are remembered for replay). Fields
//! read from an unverified body are used only to address the rejection (its result names the
//! `command_id` and `action` it claimed).

use std::collections::BTreeMap;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;

use crate::config::Protocol;
use crate::meter::control::{EsamPayload, RelayAction};

/// The `schema` of a command message.
pub const COMMAND_SCHEMA: &str = "meterd.command.v1";

/// Why a command is refused: each becomes a published `rejected` result whose `reason` starts
/// with [`Rejection::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON, or not the `meterd.command.v1` shape.
    Malformed(String),
    /// Delivered as a retained message: a command is acted on only when it is sent.
    Retained,
    /// `key_id` names no configured key.
    UnknownKey(String),
    /// The signature does not verify over `body` with the named key (or is not 64 bytes).
    BadSignature,
    /// The gateway's clock does not count as synchronised: no validity window can be checked.
    ClockUnsynchronised(String),
    /// `issued_at` is in the future (beyond the allowed skew).
    NotYetValid,
    /// `not_after` has passed.
    Expired,
    /// `not_after - issued_at` is longer than `[control] max_validity`, or not positive.
    BadValidity(String),
    /// `body.gateway` is another gateway.
    WrongGateway(String),
    /// `body.meter` is not the meter of the topic.
    WrongMeter {
        /// The topic's meter.
        topic: String,
        /// The body's meter.
        body: String,
    },
    /// A broadcast or wildcard address (or a meter this gateway does not have).
    NotAMeter(String),
    /// An `action` the contract does not have.
    UnknownAction(String),
    /// The meter's protocol has no remote control (DL/T 645-1997, Modbus).
    Unsupported(String),
    /// No control password for a plaintext command to this meter.
    NoCredentials,
    /// `command_id` was seen before.
    Replayed,
    /// The gateway's policy refuses it (trip notice, quiet hours, holiday, rate limit,
    /// override not allowed).
    Policy(String),
}

impl Rejection {
    /// A stable, machine-readable code (the start of `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Retained => "retained",
            Rejection::UnknownKey(_) => "unknown-key",
            Rejection::BadSignature => "bad-signature",
            Rejection::ClockUnsynchronised(_) => "clock-unsynchronised",
            Rejection::NotYetValid => "not-yet-valid",
            Rejection::Expired => "expired",
            Rejection::BadValidity(_) => "bad-validity",
            Rejection::WrongGateway(_) => "wrong-gateway",
            Rejection::WrongMeter { .. } => "wrong-meter",
            Rejection::NotAMeter(_) => "not-a-meter",
            Rejection::UnknownAction(_) => "unknown-action",
            Rejection::Unsupported(_) => "unsupported",
            Rejection::NoCredentials => "no-credentials",
            Rejection::Replayed => "replayed",
            Rejection::Policy(_) => "policy",
        }
    }

    /// `code: explanation`, the result's `reason`.
    pub fn reason(&self) -> String {
        let why = match self {
            Rejection::Malformed(e) => format!("not a {COMMAND_SCHEMA} message: {e}"),
            Rejection::Retained => {
                "the message was retained by the broker; commands must not be retained".into()
            }
            Rejection::UnknownKey(k) => format!("key_id {k:?} is not configured on this gateway"),
            Rejection::BadSignature => {
                "the signature does not verify over body with the named key".into()
            }
            Rejection::ClockUnsynchronised(why) => {
                format!("the gateway clock is not synchronised, no command is accepted: {why}")
            }
            Rejection::NotYetValid => "issued_at is in the future".into(),
            Rejection::Expired => "not_after has passed".into(),
            Rejection::BadValidity(why) => why.clone(),
            Rejection::WrongGateway(g) => format!("addressed to gateway {g:?}"),
            Rejection::WrongMeter { topic, body } => {
                format!("body names meter {body:?} but the topic meter {topic:?}")
            }
            Rejection::NotAMeter(m) => {
                format!(
                    "{m:?} is not a meter of this gateway (broadcast and wildcard addresses are never used)"
                )
            }
            Rejection::UnknownAction(a) => format!("unknown action {a:?}"),
            Rejection::Unsupported(p) => format!("{p} meters have no remote control"),
            Rejection::NoCredentials => {
                "no control password for this meter in the credentials file (and no esam payload)"
                    .into()
            }
            Rejection::Replayed => "command_id was already used".into(),
            Rejection::Policy(why) => why.clone(),
        };
        format!("{}: {why}", self.code())
    }
}

/// The outer message.
#[derive(Deserialize)]
struct Envelope {
    schema: String,
    key_id: String,
    body: String,
    signature: String,
}

/// The signed body.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Body {
    /// The core's id of the command (unique per command; the replay key).
    pub command_id: String,
    /// The gateway addressed.
    pub gateway: String,
    /// The meter addressed.
    pub meter: String,
    /// What to do (a contract action name).
    pub action: String,
    /// When the core issued it (RFC 3339).
    pub issued_at: String,
    /// Until when it may be executed (RFC 3339).
    pub not_after: String,
    /// Ask to skip the gateway's policy (honoured only when `[control] allow_override`).
    #[serde(default)]
    pub override_policy: bool,
    /// ESAM meters: the encrypted command, passed through.
    #[serde(default)]
    pub esam: Option<EsamBody>,
}

/// `body.esam`: made by the utility's encryption machine, hex.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct EsamBody {
    /// Identity authentication data (0x03, DI 070000FF), hex; sent first when present.
    #[serde(default)]
    pub identity: Option<String>,
    /// The 0x1C data after the password and operator code (ciphertext + MAC), hex.
    pub command: String,
}

/// What a rejection can say about the command it refuses (taken from the body even when it
/// is not verified: only to address the result).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// `body.command_id`, if readable.
    pub command_id: Option<String>,
    /// `body.action`, if readable.
    pub action: Option<String>,
}

/// A command whose signature, addressing, action and validity window are good (replay and
/// policy are checked next, against the spool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The body, as signed.
    pub body: Body,
    /// The body's exact text (for the audit).
    pub body_text: String,
    /// The key that signed it.
    pub key_id: String,
    /// The action.
    pub action: RelayAction,
    /// `issued_at`, Unix ms.
    pub issued_at_ms: i64,
    /// `not_after`, Unix ms.
    pub not_after_ms: i64,
    /// The ESAM payload, decoded.
    pub esam: Option<EsamPayload>,
}

/// What a meter of this gateway is, as far as control cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterInfo {
    /// The bus that owns it.
    pub bus: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Its DL/T 645 address, as configured.
    pub address: Option<String>,
    /// Its profile (credentials may be given per profile).
    pub profile: String,
}

/// What the checks need besides the message.
pub struct VerifyContext<'a> {
    /// This gateway's id.
    pub gateway: &'a str,
    /// Public keys by `key_id`.
    pub keys: &'a BTreeMap<String, VerifyingKey>,
    /// The meters of this gateway, by id.
    pub meters: &'a BTreeMap<String, MeterInfo>,
    /// `Ok` when the gateway clock counts as synchronised, else why not.
    pub clock: Result<(), String>,
    /// Now, Unix ms.
    pub now_ms: i64,
    /// How far in the future `issued_at` may be, ms.
    pub clock_skew_ms: i64,
    /// The longest `not_after - issued_at`, ms.
    pub max_validity_ms: i64,
}

/// Whether a DL/T 645 address is a broadcast or wildcard one (`99…`, any `A`/`a` digit).
pub fn is_broadcast_or_wildcard(address: &str) -> bool {
    address.contains(['A', 'a']) || (!address.is_empty() && address.bytes().all(|b| b == b'9'))
}

/// Reads what a message claims, for addressing a rejection. Never fails.
pub fn claimed(payload: &[u8]) -> Claimed {
    #[derive(Deserialize)]
    struct Loose {
        body: Option<String>,
    }
    #[derive(Deserialize)]
    struct LooseBody {
        command_id: Option<serde_json::Value>,
        action: Option<serde_json::Value>,
    }
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    serde_json::from_slice::<Loose>(payload)
        .ok()
        .and_then(|l| l.body)
        .and_then(|b| serde_json::from_str::<LooseBody>(&b).ok())
        .map(|b| Claimed {
            command_id: text(b.command_id),
            action: text(b.action),
        })
        .unwrap_or_default()
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    crate::hex_input::parse_hex(&[s]).ok()
}

/// Checks a command that arrived on the topic of `topic_meter`: everything but replay and
/// policy (which need the spool). See the module doc for the order.
pub fn verify(
    payload: &[u8],
    retained: bool,
    topic_meter: &str,
    cx: &VerifyContext<'_>,
) -> Result<Verified, Rejection> {
    if retained {
        return Err(Rejection::Retained);
    }
    let env: Envelope =
        serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(format!("{e}")))?;
    if env.schema != COMMAND_SCHEMA {
        return Err(Rejection::Malformed(format!(
            "schema is {:?}, expected {COMMAND_SCHEMA:?}",
            env.schema
        )));
    }
    let key = cx
        .keys
        .get(&env.key_id)
        .ok_or_else(|| Rejection::UnknownKey(env.key_id.clone()))?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(env.signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or(Rejection::BadSignature)?;
    key.verify_strict(env.body.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| Rejection::BadSignature)?;

    // Signed by the core from here on.
    let body: Body =
        serde_json::from_str(&env.body).map_err(|e| Rejection::Malformed(format!("body: {e}")))?;
    if let Err(why) = &cx.clock {
        return Err(Rejection::ClockUnsynchronised(why.clone()));
    }
    if body.gateway != cx.gateway {
        return Err(Rejection::WrongGateway(body.gateway));
    }
    if body.meter != topic_meter {
        return Err(Rejection::WrongMeter {
            topic: topic_meter.to_owned(),
            body: body.meter,
        });
    }
    let meter = match cx.meters.get(&body.meter) {
        Some(m) if !m.address.as_deref().is_some_and(is_broadcast_or_wildcard) => m,
        _ => return Err(Rejection::NotAMeter(body.meter)),
    };
    if is_broadcast_or_wildcard(&body.meter) {
        return Err(Rejection::NotAMeter(body.meter));
    }
    let action = RelayAction::parse(&body.action)
        .ok_or_else(|| Rejection::UnknownAction(body.action.clone()))?;
    if meter.protocol != Protocol::Dlt645_2007 {
        return Err(Rejection::Unsupported(meter.protocol.name().to_owned()));
    }
    let issued_at_ms = crate::clock::parse_rfc3339(&body.issued_at).ok_or_else(|| {
        Rejection::Malformed(format!("issued_at {:?} is not RFC 3339", body.issued_at))
    })?;
    let not_after_ms = crate::clock::parse_rfc3339(&body.not_after).ok_or_else(|| {
        Rejection::Malformed(format!("not_after {:?} is not RFC 3339", body.not_after))
    })?;
    if not_after_ms <= issued_at_ms {
        return Err(Rejection::BadValidity(
            "not_after is not after issued_at".into(),
        ));
    }
    if not_after_ms - issued_at_ms > cx.max_validity_ms {
        return Err(Rejection::BadValidity(format!(
            "valid for {} s, longer than this gateway accepts ({} s)",
            (not_after_ms - issued_at_ms) / 1000,
            cx.max_validity_ms / 1000
        )));
    }
    if issued_at_ms > cx.now_ms + cx.clock_skew_ms {
        return Err(Rejection::NotYetValid);
    }
    if cx.now_ms >= not_after_ms {
        return Err(Rejection::Expired);
    }
    let esam = match &body.esam {
        None => None,
        Some(e) => Some(EsamPayload {
            identity: match &e.identity {
                None => None,
                Some(h) => Some(
                    hex_bytes(h)
                        .ok_or_else(|| Rejection::Malformed("esam.identity is not hex".into()))?,
                ),
            },
            command: hex_bytes(&e.command)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| Rejection::Malformed("esam.command is not hex".into()))?,
        }),
    };
    Ok(Verified {
        key_id: env.key_id,
        body_text: env.body,
        action,
        issued_at_ms,
        not_after_ms,
        esam,
        body,
    })
}

/// The meter of a command topic `{prefix}/{gateway}/meters/{meter}/commands`, if it is one.
pub fn topic_meter<'t>(topic: &'t str, prefix: &str, gateway: &str) -> Option<&'t str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(gateway)?.strip_prefix("/meters/")?;
    let meter = rest.strip_suffix("/commands")?;
    (!meter.is_empty() && !meter.contains(['/', '+', '#'])).then_some(meter)
}
