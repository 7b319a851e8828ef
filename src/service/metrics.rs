//! `GET /metrics`: the numbers of `/api/status` in Prometheus text format (OpenMetrics flavour,
//! written by `prometheus-client`), labelled `bus` and `meter`.
//!
//! `prometheus-client` writes OpenMetrics; a scraper that does not ask for it (`Accept:
//! application/openmetrics-text`) gets the classic text format 0.0.4 instead ([`to_classic`]:
//! counter families named with their `_total` suffix, no `# EOF`), which every Prometheus
//! parser reads with the right types.
//!
//! A fresh registry is filled from one [`Snapshot`] per scrape, so the counters are exactly
//! those of `/api/status` taken at the same instant; nothing here keeps state between scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Handles;
use super::report::Snapshot;
use crate::health::{BusHealth, LinkState, MeterHealth, MeterState};

type Labels = Vec<(String, String)>;
type Counters = Family<Labels, Counter>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
/// One bus counter: name, help, and how to read it from a bus status.
type BusCounter<'a> = (&'a str, &'a str, &'a dyn Fn(&BusHealth) -> u64);
/// One meter counter: name, help, and how to read it from a meter status.
type MeterCounter = (&'static str, &'static str, fn(&MeterHealth) -> u64);

struct Builder {
    registry: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let f = Counters::default();
        for (l, v) in rows {
            f.get_or_create(&l).inc_by(v);
        }
        self.registry.register(name, help, f);
    }

    fn gauge(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        let f = Gauges::default();
        for (l, v) in rows {
            f.get_or_create(&l).set(v);
        }
        self.registry.register(name, help, f);
    }
}

fn bus_l(bus: &str) -> Labels {
    vec![("bus".into(), bus.into())]
}

fn meter_l(bus: &str, meter: &str) -> Labels {
    vec![("bus".into(), bus.into()), ("meter".into(), meter.into())]
}

/// The exposition text of `snap`.
pub fn render(snap: &Snapshot, h: &Handles) -> Result<String, std::fmt::Error> {
    let mut b = Builder {
        registry: Registry::default(),
    };
    let none = Labels::new;
    let uptime = snap
        .now
        .duration_since(h.started)
        .map_or(0.0, |d| d.as_secs_f64());
    b.gauge(
        "meterd_uptime_seconds",
        "Seconds since the daemon started",
        vec![(none(), uptime)],
    );
    let u = &snap.uplink;
    let connected = matches!(u.state, crate::uplink::ConnectionState::Connected);
    b.gauge(
        "meterd_uplink_connected",
        "1 when the MQTT uplink is connected",
        vec![(none(), f64::from(u8::from(connected)))],
    );
    b.gauge(
        "meterd_uplink_in_flight",
        "Publishes waiting for PUBACK",
        vec![(none(), u.in_flight as f64)],
    );
    b.counter(
        "meterd_uplink_published",
        "Reading publishes written to the connection (re-sends included)",
        vec![(none(), u.published)],
    );
    b.counter(
        "meterd_uplink_acked",
        "Readings acknowledged by the broker",
        vec![(none(), u.acked)],
    );
    b.counter(
        "meterd_uplink_connects",
        "MQTT connections made",
        vec![(none(), u.connects)],
    );
    b.gauge(
        "meterd_spool_depth",
        "Readings in the spool waiting for the broker",
        vec![(none(), snap.spool.depth as f64)],
    );
    b.gauge(
        "meterd_spool_bytes",
        "Bytes of readings in the spool",
        vec![(none(), snap.spool.bytes as f64)],
    );
    b.counter(
        "meterd_spool_dropped",
        "Readings dropped because the spool was full",
        vec![(none(), snap.spool.dropped)],
    );
    b.counter(
        "meterd_spool_dropped_in_memory",
        "Readings dropped from memory before they had a seq (spool unwritable for too long)",
        vec![(none(), snap.spool.dropped_in_memory)],
    );
    b.gauge(
        "meterd_meters",
        "Meters that should be read",
        vec![(none(), snap.gateway.meters as f64)],
    );
    b.gauge(
        "meterd_meters_read_today",
        "Meters with a successful poll since 00:00 UTC",
        vec![(none(), snap.gateway.today.meters_read as f64)],
    );
    b.gauge(
        "meterd_success_rate_today",
        "Reading success rate today (UTC): meters read / meters",
        vec![(none(), snap.gateway.today.rate.unwrap_or(0.0))],
    );
    b.gauge(
        "meterd_success_rate_24h",
        "Reading success rate over the last 24 h: meters read / meters",
        vec![(none(), snap.gateway.last_24h.rate.unwrap_or(0.0))],
    );

    // Buses.
    let per_bus = |f: &dyn Fn(&BusHealth) -> u64| -> Vec<(Labels, u64)> {
        snap.buses.iter().map(|s| (bus_l(&s.name), f(s))).collect()
    };
    let bus_counters: [BusCounter<'_>; 13] = [
        (
            "meterd_bus_transactions",
            "Transactions (attempts) on the wire",
            &|s| s.transactions,
        ),
        (
            "meterd_bus_timeouts",
            "Attempts without a reply in time",
            &|s| s.timeouts,
        ),
        (
            "meterd_bus_retries",
            "Attempts repeated after a timeout",
            &|s| s.retries,
        ),
        ("meterd_bus_link_errors", "Times the link failed", &|s| {
            s.link_errors
        }),
        ("meterd_bus_reopens", "Times the link was reopened", &|s| {
            s.reopens
        }),
        (
            "meterd_bus_checksum_errors",
            "Frames with a bad checksum or CRC",
            &|s| s.wire.checksum_errors,
        ),
        ("meterd_bus_noise_bytes", "Noise bytes skipped", &|s| {
            s.wire.noise_bytes
        }),
        ("meterd_bus_echo_bytes", "Echo bytes removed", &|s| {
            s.wire.echo_bytes
        }),
        (
            "meterd_bus_stale_bytes",
            "Stale bytes discarded before requests",
            &|s| s.wire.stale_bytes,
        ),
        (
            "meterd_bus_foreign_frames",
            "Valid frames that were not the awaited reply",
            &|s| s.wire.foreign_frames,
        ),
        ("meterd_bus_tx_bytes", "Bytes sent", &|s| s.wire.tx_bytes),
        ("meterd_bus_rx_bytes", "Bytes received", &|s| {
            s.wire.rx_bytes
        }),
        (
            "meterd_bus_overruns",
            "Poll slots skipped on the bus",
            &|s| s.overruns,
        ),
    ];
    for (name, help, f) in bus_counters {
        b.counter(name, help, per_bus(f));
    }
    b.gauge(
        "meterd_bus_link_up",
        "1 when the bus's link is open",
        snap.buses
            .iter()
            .map(|s| {
                (
                    bus_l(&s.name),
                    f64::from(u8::from(matches!(s.link, LinkState::Up))),
                )
            })
            .collect(),
    );
    b.gauge(
        "meterd_bus_utilisation",
        "Share of time spent in transactions",
        snap.buses
            .iter()
            .map(|s| (bus_l(&s.name), s.utilisation))
            .collect(),
    );
    b.gauge(
        "meterd_bus_success_rate_today",
        "Reading success rate of the bus today (UTC): meters read / meters",
        snap.buses
            .iter()
            .zip(&snap.bus_success)
            .map(|(s, g)| (bus_l(&s.name), g.today.rate.unwrap_or(0.0)))
            .collect(),
    );

    // Meters.
    let meters: Vec<(&str, &MeterHealth)> = snap
        .buses
        .iter()
        .flat_map(|s| s.meters.iter().map(move |m| (s.name.as_str(), m)))
        .collect();
    b.counter(
        "meterd_meter_polls_ok",
        "Polls the meter answered",
        meters
            .iter()
            .map(|(bus, m)| (meter_l(bus, &m.id), m.polls_ok))
            .collect(),
    );
    b.counter(
        "meterd_meter_polls_failed",
        "Polls the meter did not answer",
        meters
            .iter()
            .map(|(bus, m)| (meter_l(bus, &m.id), m.polls_failed))
            .collect(),
    );
    b.counter(
        "meterd_meter_overruns",
        "Poll slots of the meter skipped",
        meters
            .iter()
            .map(|(bus, m)| (meter_l(bus, &m.id), m.overruns))
            .collect(),
    );
    let meter_wire: [MeterCounter; 4] = [
        (
            "meterd_meter_timeouts",
            "Attempts to the meter without a reply in time",
            |m| m.timeouts,
        ),
        (
            "meterd_meter_checksum_errors",
            "Replies to the meter with a bad checksum or CRC",
            |m| m.wire.checksum_errors,
        ),
        (
            "meterd_meter_noise_bytes",
            "Noise bytes skipped in the meter's transactions",
            |m| m.wire.noise_bytes,
        ),
        (
            "meterd_meter_foreign_frames",
            "Valid frames that were not the meter's awaited reply",
            |m| m.wire.foreign_frames,
        ),
    ];
    for (name, help, f) in meter_wire {
        b.counter(
            name,
            help,
            meters
                .iter()
                .map(|(bus, m)| (meter_l(bus, &m.id), f(m)))
                .collect(),
        );
    }
    b.gauge(
        "meterd_meter_consecutive_failures",
        "Polls in a row without an answer",
        meters
            .iter()
            .map(|(bus, m)| (meter_l(bus, &m.id), f64::from(m.consecutive_failures)))
            .collect(),
    );
    let mut states = Vec::new();
    for (bus, m) in &meters {
        for (s, name) in [
            (MeterState::Ok, "ok"),
            (MeterState::Degraded, "degraded"),
            (MeterState::Unreachable, "unreachable"),
        ] {
            let mut l = meter_l(bus, &m.id);
            l.push(("state".into(), name.into()));
            states.push((l, f64::from(u8::from(m.state == s))));
        }
    }
    b.gauge(
        "meterd_meter_state",
        "1 for the meter's current state (ok, degraded, unreachable)",
        states,
    );
    let rates: Vec<(Labels, f64)> = snap
        .buses
        .iter()
        .zip(&snap.meters)
        .flat_map(|(s, ms)| {
            s.meters
                .iter()
                .zip(ms)
                .map(|(m, (succ, _))| (meter_l(&s.name, &m.id), succ.today.rate.unwrap_or(0.0)))
                .collect::<Vec<_>>()
        })
        .collect();
    b.gauge(
        "meterd_meter_success_rate_today",
        "Successful polls / polls of the meter today (UTC); 0 without polls",
        rates,
    );
    if let Some(c) = &snap.control {
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        b.counter(
            "meterd_commands",
            "Fee commands since start, by action and outcome (done, failed, rejected, unknown)",
            c.commands
                .iter()
                .map(|n| {
                    (
                        l(&[("action", &n.action), ("outcome", &n.outcome)]),
                        n.count,
                    )
                })
                .collect(),
        );
        b.gauge(
            "meterd_relay_on",
            "1 when the meter's relay was last read back closed (supply on), 0 open",
            c.meters
                .iter()
                .filter_map(|m| {
                    let r = m.relay.as_ref()?;
                    Some((
                        l(&[("meter", &m.meter)]),
                        f64::from(u8::from(r.state == "on")),
                    ))
                })
                .collect(),
        );
    }
    let mut out = String::new();
    encode(&mut out, &b.registry)?;
    Ok(out)
}

/// OpenMetrics text as classic Prometheus text 0.0.4: `# HELP`/`# TYPE` of a counter family
/// name its samples (`x_total`), `# UNIT` and `# EOF` lines are dropped.
pub fn to_classic(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 64 * counters.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_classic;

    #[test]
    fn classic_text_names_counter_families_with_total() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total{bus=\"b\"} 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1.0\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total{bus=\"b\"} 5\n# HELP g A gauge.\n# TYPE g gauge\ng 1.0\n"
        );
    }
}
