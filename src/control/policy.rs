//! The gateway's own rules for fee commands (`[control]`), enforced whatever the billing core
//! sends. Pure: the facts about the meter's history come from the spool, `now` is passed in.
//!
//! - Restoring supply (`close_allow`, `close`) is never refused by policy and never counted
//!   against the rate limit: a customer who paid gets power back at once.
//! - A `trip` needs a warning on the meter: the latest `alarm`/`alarm_release` done on that
//!   meter is an `alarm`, done at least `trip_notice` before now.
//! - No trip in quiet hours, on quiet weekdays or on holidays, all in `[control] utc_offset`
//!   (the customers' local time; the gateway's clock is UTC and meters keep their own zone).
//! - At most `rate_limit` accepted commands per meter within `rate_window`.
//! - `override_policy: true` in a signed body skips the trip rules and the rate limit only when
//!   `allow_override` is set; otherwise the flag itself is refused (the core asked for
//!   something this gateway does not allow, and should know).

use crate::clock::{UnixMillis, civil};
use crate::config::ControlConfig;
use crate::meter::control::RelayAction;

/// What the spool knows about a meter's recent commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeterFacts {
    /// When the latest warning-related command done on the meter finished, and whether it was
    /// an `alarm` (`true`) or an `alarm_release` (`false`).
    pub last_warning: Option<(UnixMillis, bool)>,
    /// Commands accepted for this meter within the rate window (restores not counted).
    pub accepted_in_window: u32,
}

/// `Err(why)` when the policy refuses `action` now.
pub fn check(
    cfg: &ControlConfig,
    action: RelayAction,
    override_policy: bool,
    now: UnixMillis,
    facts: MeterFacts,
) -> Result<(), String> {
    if action.restores_supply() {
        return Ok(());
    }
    if override_policy && !cfg.allow_override {
        return Err("override_policy is not allowed on this gateway".into());
    }
    let overridden = override_policy && cfg.allow_override;
    if !overridden && facts.accepted_in_window >= cfg.rate_limit {
        return Err(format!(
            "rate limit: {} commands for this meter within {}",
            facts.accepted_in_window,
            humantime::format_duration(cfg.rate_window)
        ));
    }
    if action != RelayAction::Trip || overridden {
        return Ok(());
    }
    if let Some(why) = quiet_now(cfg, now) {
        return Err(format!("no trip {why}"));
    }
    let notice = i64::try_from(cfg.trip_notice.as_millis()).unwrap_or(i64::MAX);
    match facts.last_warning {
        Some((at, true)) if now.saturating_sub(at) >= notice => Ok(()),
        Some((at, true)) => Err(format!(
            "trip notice: the alarm was done {} s ago, {} s are required",
            now.saturating_sub(at).max(0) / 1000,
            notice / 1000
        )),
        Some((_, false)) => Err("trip notice: the alarm was released".into()),
        None => Err("trip notice: no alarm was done on this meter".into()),
    }
}

/// Why `now` is a time without trips (quiet hours, quiet day, holiday), if it is one.
pub fn quiet_now(cfg: &ControlConfig, now: UnixMillis) -> Option<String> {
    let local = civil(now + cfg.utc_offset.minutes() * 60_000);
    let date = format!("{:04}-{:02}-{:02}", local.year, local.month, local.day);
    if cfg.holidays.contains(&date) {
        return Some(format!("on a holiday ({date}, {})", cfg.utc_offset));
    }
    if cfg.quiet_days.contains(&local.weekday) {
        return Some(format!("on this weekday ({date}, {})", cfg.utc_offset));
    }
    let minute = (local.hour * 60 + local.minute) as u16;
    cfg.quiet_hours
        .iter()
        .find(|q| q.contains(minute))
        .map(|_| {
            format!(
                "in quiet hours ({:02}:{:02} at {})",
                local.hour, local.minute, cfg.utc_offset
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(extra: &str) -> ControlConfig {
        #[derive(serde::Deserialize)]
        struct T {
            control: ControlConfig,
        }
        let text = format!(
            "[control]\n{extra}\n[[control.key]]\nkey_id = \"k\"\npublic_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n"
        );
        toml::from_str::<T>(&text).unwrap().control
    }

    /// 2026-12-07 (a Monday) 04:00 UTC = 12:00 at +08:00.
    const NOON_CN: i64 = 1_796_616_000_000;
    const HOUR: i64 = 3_600_000;

    fn alarmed(ago: i64) -> MeterFacts {
        MeterFacts {
            last_warning: Some((NOON_CN - ago, true)),
            accepted_in_window: 0,
        }
    }

    #[test]
    fn the_test_instant_is_a_monday_noon_in_china() {
        let c = civil(NOON_CN + 8 * HOUR);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.weekday),
            (2026, 12, 7, 12, 1)
        );
    }

    #[test]
    fn a_trip_needs_an_alarm_long_enough_before() {
        let c = cfg("trip_notice = \"2h\"");
        let t = RelayAction::Trip;
        assert!(check(&c, t, false, NOON_CN, alarmed(2 * HOUR)).is_ok());
        let e = check(&c, t, false, NOON_CN, alarmed(HOUR)).unwrap_err();
        assert!(e.contains("trip notice") && e.contains("3600 s ago"), "{e}");
        let e = check(&c, t, false, NOON_CN, MeterFacts::default()).unwrap_err();
        assert!(e.contains("no alarm"), "{e}");
        let released = MeterFacts {
            last_warning: Some((NOON_CN - 5 * HOUR, false)),
            accepted_in_window: 0,
        };
        assert!(
            check(&c, t, false, NOON_CN, released)
                .unwrap_err()
                .contains("released")
        );
        // Other actions need no notice.
        assert!(
            check(
                &c,
                RelayAction::Alarm,
                false,
                NOON_CN,
                MeterFacts::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn restoring_supply_is_never_refused() {
        let c = cfg("trip_notice = \"2h\"\nquiet_hours = [\"00:00-23:59\"]\nrate_limit = 1");
        let busy = MeterFacts {
            last_warning: None,
            accepted_in_window: 50,
        };
        for a in [RelayAction::Close, RelayAction::CloseAllow] {
            assert!(check(&c, a, false, NOON_CN, busy).is_ok());
            assert!(check(&c, a, true, NOON_CN, busy).is_ok());
        }
    }

    #[test]
    fn quiet_hours_days_and_holidays_are_local_time() {
        let t = RelayAction::Trip;
        // 12:00 local is inside 11:00-13:00 local, though 04:00 UTC is not.
        let c = cfg("trip_notice = \"0s\"\nquiet_hours = [\"11:00-13:00\"]");
        let e = check(&c, t, false, NOON_CN, alarmed(0)).unwrap_err();
        assert!(e.contains("quiet hours (12:00 at +08:00)"), "{e}");
        assert!(check(&c, t, false, NOON_CN + HOUR, alarmed(0)).is_ok());
        let c = cfg("trip_notice = \"0s\"\nquiet_hours = [\"03:00-05:00\"]");
        assert!(check(&c, t, false, NOON_CN, alarmed(0)).is_ok());
        let c = cfg("trip_notice = \"0s\"\nholidays = [\"2026-12-07\"]");
        assert!(
            check(&c, t, false, NOON_CN, alarmed(0))
                .unwrap_err()
                .contains("holiday")
        );
        // 2026-12-07 at +08:00 starts at 2026-12-06T16:00Z.
        assert!(
            check(&c, t, false, NOON_CN - 12 * HOUR, alarmed(0))
                .unwrap_err()
                .contains("holiday")
        );
        let long_ago = MeterFacts {
            last_warning: Some((0, true)),
            accepted_in_window: 0,
        };
        assert!(check(&c, t, false, NOON_CN - 12 * HOUR - 1, long_ago).is_ok());
        let c = cfg("trip_notice = \"0s\"\nquiet_days = [\"mon\"]");
        assert!(
            check(&c, t, false, NOON_CN, alarmed(0))
                .unwrap_err()
                .contains("weekday")
        );
        let c = cfg("trip_notice = \"0s\"\nquiet_days = [\"mon\"]\nutc_offset = \"-08:00\"");
        // 04:00 UTC is Sunday 20:00 at -08:00.
        assert!(check(&c, t, false, NOON_CN, alarmed(0)).is_ok());
    }

    #[test]
    fn the_rate_limit_counts_per_meter() {
        let c = cfg("rate_limit = 2\nrate_window = \"1h\"");
        let f = |n| MeterFacts {
            last_warning: None,
            accepted_in_window: n,
        };
        assert!(check(&c, RelayAction::Alarm, false, NOON_CN, f(1)).is_ok());
        let e = check(&c, RelayAction::Alarm, false, NOON_CN, f(2)).unwrap_err();
        assert!(e.contains("rate limit"), "{e}");
    }

    #[test]
    fn override_only_where_allowed() {
        let t = RelayAction::Trip;
        let strict = cfg("quiet_hours = [\"00:00-23:59\"]");
        let e = check(&strict, t, true, NOON_CN, MeterFacts::default()).unwrap_err();
        assert!(e.contains("override_policy is not allowed"), "{e}");
        let lax = cfg("quiet_hours = [\"00:00-23:59\"]\nallow_override = true\nrate_limit = 1");
        let facts = MeterFacts {
            last_warning: None,
            accepted_in_window: 9,
        };
        assert!(check(&lax, t, true, NOON_CN, facts).is_ok());
        assert!(check(&lax, t, false, NOON_CN, facts).is_err());
        assert_eq!(lax.trip_notice, Duration::from_secs(86_400));
    }
}
