//! Whether the gateway's own clock can be trusted: the precondition for comparing a meter's
//! clock with it, for setting a meter's clock (broadcast time sync) and for checking a fee
//! command's validity window. A gateway that is wrong about its own time would "correct" every
//! meter to the wrong time, or accept an expired command.
//!
//! Configuration decides (`[gateway_clock] synchronised`): by default the kernel's NTP state
//! (`adjtimex(2)`: synchronised unless it returns `TIME_ERROR`), or an explicit trust for
//! gateways whose time comes from a source the kernel does not know of (GPS/BeiDou receiver
//! setting the clock, the master station's time sync), or never.

use serde::{Deserialize, Serialize};

/// How the gateway decides whether its clock is synchronised (`[gateway_clock] synchronised`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockTrust {
    /// The kernel's NTP state: synchronised unless `adjtimex` reports `TIME_ERROR` (no NTP
    /// daemon, or it lost its servers). The safe default wherever NTP runs.
    #[default]
    Kernel,
    /// Always synchronised: time set by GPS/BeiDou or the master station, which the kernel does
    /// not track. Risk: a clock that went wrong is trusted anyway.
    Trusted,
    /// Never synchronised: no meter clock is compared or set, and no fee command is accepted.
    Never,
}

/// The answer, with the reason when the clock does not count as synchronised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockState {
    /// The clock counts as synchronised; the text says why (for logs and status).
    Synchronised(&'static str),
    /// It does not; the text says why.
    Unsynchronised(String),
}

impl ClockState {
    /// Whether the clock counts as synchronised.
    pub fn is_synchronised(&self) -> bool {
        matches!(self, ClockState::Synchronised(_))
    }
}

impl ClockTrust {
    /// Asks now (one system call for [`ClockTrust::Kernel`]; cheap enough to call per decision).
    pub fn state(self) -> ClockState {
        match self {
            ClockTrust::Trusted => ClockState::Synchronised("trusted by configuration"),
            ClockTrust::Never => {
                ClockState::Unsynchronised("never trusted by configuration".to_owned())
            }
            ClockTrust::Kernel => kernel_state(),
        }
    }
}

/// The kernel's view (`adjtimex` with no modes set only reads). `TIME_ERROR` is what Linux
/// returns while `STA_UNSYNC` is set, i.e. no NTP daemon has told it the clock is good.
#[cfg(target_os = "linux")]
fn kernel_state() -> ClockState {
    // SAFETY: `timex` is plain data; zeroed with `modes = 0` asks adjtimex to read only.
    let mut t: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, exclusively borrowed `timex` for the duration of the call.
    let r = unsafe { libc::adjtimex(&mut t) };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        return ClockState::Unsynchronised(format!("adjtimex failed: {e}"));
    }
    if r == libc::TIME_ERROR {
        return ClockState::Unsynchronised(
            "the kernel reports the clock unsynchronised (adjtimex: TIME_ERROR; no NTP \
             sync); set [gateway_clock] synchronised = \"trusted\" if time comes from GPS or \
             the master station"
                .to_owned(),
        );
    }
    ClockState::Synchronised("the kernel reports NTP synchronisation")
}

#[cfg(not(target_os = "linux"))]
fn kernel_state() -> ClockState {
    ClockState::Unsynchronised("no kernel NTP state on this platform".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_trust_overrides_the_kernel() {
        assert!(ClockTrust::Trusted.state().is_synchronised());
        assert!(!ClockTrust::Never.state().is_synchronised());
    }

    #[test]
    fn the_kernel_answers_without_error() {
        // Either answer is legitimate on a test machine; the call itself must work, and an
        // unsynchronised answer must say why.
        match ClockTrust::Kernel.state() {
            ClockState::Synchronised(why) => assert!(why.contains("kernel")),
            ClockState::Unsynchronised(why) => {
                assert!(!why.contains("adjtimex failed"), "{why}");
            }
        }
    }

    #[test]
    fn parses_from_config_words() {
        #[derive(serde::Deserialize)]
        struct T {
            s: ClockTrust,
        }
        let t: T = toml::from_str("s = \"trusted\"").unwrap();
        assert_eq!(t.s, ClockTrust::Trusted);
        assert!(toml::from_str::<T>("s = \"gps\"").is_err());
    }
}
