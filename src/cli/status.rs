//! `meterd status`: per-bus, per-meter health of the running daemon, from its local
//! diagnostics service (`GET /api/status`).
//!
//! Prints a table (or the document itself with `--json`). When no daemon answers it says so in
//! one line and exits 2; it never opens a bus itself.

use std::process::ExitCode;

use clap::Args;

use super::{fail, runtime};
use crate::ingest::completeness::{CompletenessMessage, PeriodMessage};
use crate::service::DEFAULT_LISTEN;
use crate::service::client::{self, ClientError, Endpoint};
use crate::service::report::StatusReport;

/// Arguments of `meterd status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The daemon's diagnostics service: `http://HOST:PORT` or `unix:/PATH`
    /// (with a token, set METERD_TOKEN).
    #[arg(long, default_value_t = format!("http://{DEFAULT_LISTEN}"))]
    pub url: String,
    /// Print the status document as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `--url` of the daemon commands, parsed; a bad URL is a one-line error.
pub(crate) fn endpoint(cmd: &str, url: &str) -> Result<Endpoint, ExitCode> {
    Endpoint::parse(url).map_err(|e| fail(cmd, &e, 2))
}

/// Exit code of a failed call: 2 when the daemon is not there, 1 otherwise.
pub(crate) fn client_fail(cmd: &str, e: &ClientError) -> ExitCode {
    match e {
        ClientError::NotRunning(_) => fail(cmd, &e.to_string(), 2),
        _ => fail(cmd, &e.to_string(), 1),
    }
}

/// Runs `meterd status`.
pub fn run(args: &StatusArgs) -> ExitCode {
    let ep = match endpoint("status", &args.url) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail("status", &e, 2),
    };
    let text = match rt.block_on(client::get(&ep, "/api/status")) {
        Ok(t) => t,
        Err(e) => return client_fail("status", &e),
    };
    if args.json {
        println!("{}", text.trim_end());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<StatusReport>(&text) {
        Ok(r) => {
            // Which daemon answered: several may run (a demo beside the real one).
            print!("daemon at {}: {}", args.url, table(&r));
            ExitCode::SUCCESS
        }
        Err(e) => fail(
            "status",
            &format!("the daemon's answer is not a status document: {e}"),
            1,
        ),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// The daily settlement records of the last 7 days, a line each: delivered of expected, and
/// which meters are missing (lost ones marked).
fn completeness(c: &CompletenessMessage) -> String {
    let mut out = String::from("daily settlement records (day: delivered/expected):\n");
    for d in &c.days {
        out.push_str(&format!(
            "  {}: {}/{}{}\n",
            d.day,
            d.delivered,
            d.expected,
            missing_text(&d.missing, &d.lost)
        ));
    }
    out
}

/// `"; missing A, B (lost)"`, or nothing when no meter is missing.
fn missing_text(missing: &[String], lost: &[String]) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let named: Vec<String> = missing
        .iter()
        .map(|m| {
            if lost.contains(m) {
                format!("{m} (lost)")
            } else {
                m.clone()
            }
        })
        .collect();
    format!("; missing {}", named.join(", "))
}

/// Monthly or hourly settlement records: a total line for the window, then one line per
/// period (monthly: every month; hourly: only the hours not complete, 48 lines would drown the
/// rest).
fn period_completeness(c: &PeriodMessage) -> String {
    let rows = c.rows();
    let (delivered, expected) = rows
        .iter()
        .fold((0, 0), |(d, e), r| (d + r.delivered, e + r.expected));
    let (plural, one) = match c.kind.as_str() {
        "hourly" => ("hours", "hour"),
        "load_profile" => ("load-record stamps", "stamp"),
        _ => ("months", "month"),
    };
    // Hours and load records are many: only the incomplete ones are listed.
    let terse = c.kind != "monthly";
    let mut out = format!(
        "{} settlement records, last {} {plural} ({one}: delivered/expected): {delivered}/{expected}\n",
        c.kind,
        rows.len(),
    );
    for r in rows {
        if terse && r.missing.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  {}: {}/{}{}\n",
            r.period.text(),
            r.delivered,
            r.expected,
            missing_text(&r.missing, &r.lost)
        ));
    }
    out
}

/// The status as text: a summary, then one row per meter.
pub fn table(r: &StatusReport) -> String {
    let g = &r.gateway;
    let mut out = format!(
        "gateway {} (meterd {}), up {}s; uplink {}{}; spool {} readings, {} dropped, {} dropped in memory\n",
        g.id,
        g.version,
        g.uptime_s,
        g.uplink.state,
        g.uplink
            .last_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
        g.spool.depth,
        g.spool.dropped,
        g.spool.dropped_in_memory
    );
    out.push_str(&format!(
        "reading success {}: {} ({} of {} meters read); last 24 h {}\n",
        g.success.day,
        pct(g.success.today.rate),
        g.success.today.meters_read,
        g.success.meters,
        pct(g.success.last_24h.rate)
    ));
    if let Some(c) = &g.completeness {
        out.push_str(&completeness(c));
    }
    for c in [
        &g.completeness_monthly,
        &g.completeness_hourly,
        &g.completeness_load_profile,
    ]
    .into_iter()
    .flatten()
    {
        out.push_str(&period_completeness(c));
    }
    for b in &r.buses {
        out.push_str(&format!(
            "bus {}: link {}{}; {} transactions, {} timeouts, {} checksum errors, {} noise bytes, utilisation {}\n",
            b.name,
            b.link,
            b.link_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            b.transactions,
            b.timeouts,
            b.checksum_errors,
            b.noise_bytes,
            pct(Some(b.utilisation))
        ));
    }
    let head = [
        "bus",
        "meter",
        "state",
        "last success",
        "success today",
        "fails in a row",
        "checksum errors",
        "last error",
    ];
    let rows: Vec<[String; 8]> = r
        .buses
        .iter()
        .flat_map(|b| {
            b.meters.iter().map(|m| {
                [
                    b.name.clone(),
                    m.id.clone(),
                    m.state.clone(),
                    m.last_success.clone().unwrap_or_else(|| "never".into()),
                    format!(
                        "{} ({}/{})",
                        pct(m.success.today.rate),
                        m.success.today.ok,
                        m.success.today.polls
                    ),
                    m.consecutive_failures.to_string(),
                    m.checksum_errors.to_string(),
                    m.last_error.clone().unwrap_or_default(),
                ]
            })
        })
        .collect();
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |c: &[String; 8]| {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            if i == 7 {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}  ", width = w[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    out.push('\n');
    out.push_str(&line(&head.map(String::from)));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}
