//! The Markdown table `scripts/bench.sh` prints, from the JSON the measurements wrote.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::Value;

/// Targets from issue 3.
const LOGIN_RATIO: f64 = 0.80;
const RELAY_RATIO: f64 = 0.95;
const IDLE_PLAIN_KIB: f64 = 8.0;
const IDLE_TLS_KIB: f64 = 32.0;

#[derive(Args)]
pub struct ReportArgs {
    /// IMAP logins.
    #[arg(long)]
    logins: Option<PathBuf>,
    /// `logins --protocol pop3`.
    #[arg(long)]
    pop3_logins: Option<PathBuf>,
    /// `logins --protocol submission`.
    #[arg(long)]
    submission_logins: Option<PathBuf>,
    #[arg(long)]
    fetch: Option<PathBuf>,
    #[arg(long)]
    idle_plain: Option<PathBuf>,
    #[arg(long)]
    idle_tls: Option<PathBuf>,
    /// Exit with status 1 when a target is missed or a measurement is missing.
    #[arg(long)]
    strict: bool,
}

fn load(path: &Option<PathBuf>) -> Result<Option<Value>> {
    let Some(p) = path else { return Ok(None) };
    if !Path::new(p).exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?,
    ))
}

/// `1234567.8` -> `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const NA: &str = "n/a";

struct Row {
    metric: String,
    direct: String,
    proxied: String,
    result: String,
    target: String,
    pass: Option<bool>,
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "pass",
        Some(false) => "**FAIL**",
        None => "not measured",
    }
}

/// A direct/proxied comparison; `key` names the rate inside each side's object.
fn ratio_row(
    metric: &str,
    v: Option<&Value>,
    key: &str,
    target: f64,
    fmt: fn(f64) -> String,
    notes: &mut Vec<String>,
) -> Row {
    let side = |s: &str| v.and_then(|v| v[s][key].as_f64());
    let (d, p) = (side("direct"), side("proxied"));
    for s in ["direct", "proxied"] {
        if let Some(v) = v {
            let errors = v[s]["errors"].as_u64().unwrap_or(0);
            if errors > 0 {
                notes.push(format!(
                    "{metric}, {s}: {errors} failed iterations (first: {})",
                    v[s]["first_error"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    // The median of the per-round ratios (each round ran both sides back to back);
    // the overall rates, shown beside it, are sums over all rounds.
    let r = v.map(|v| &v["ratio"]);
    let ratio = r.and_then(|r| r["median"].as_f64());
    if let Some(r) = r.filter(|r| !r.is_null()) {
        let pct = |k: &str| {
            r[k].as_f64()
                .map_or(NA.into(), |x| format!("{:.1}", x * 100.0))
        };
        let overall = match (d, p) {
            (Some(d), Some(p)) if d > 0.0 => format!("{:.1} %", p / d * 100.0),
            _ => NA.into(),
        };
        notes.push(format!(
            "{metric}: median of {} per-round ratios; range {}–{} %; ratio of the totals {overall}",
            r["per_round"].as_array().map_or(0, Vec::len),
            pct("min"),
            pct("max"),
        ));
    }
    Row {
        metric: metric.into(),
        direct: d.map_or(NA.into(), fmt),
        proxied: p.map_or(NA.into(), fmt),
        result: ratio.map_or(NA.into(), |r| format!("{:.1} % of direct", r * 100.0)),
        target: format!("≥ {:.0} % of direct", target * 100.0),
        pass: ratio.map(|r| r >= target),
    }
}

fn idle_row(metric: &str, v: Option<&Value>, target_kib: f64, notes: &mut Vec<String>) -> Row {
    let mut row = Row {
        metric: metric.into(),
        direct: "—".into(),
        proxied: NA.into(),
        result: NA.into(),
        target: format!("≤ {target_kib:.0} KiB/session"),
        pass: None,
    };
    let Some(v) = v else { return row };
    let held = v["sessions_held"].as_u64().unwrap_or(0);
    let wanted = v["sessions_wanted"].as_u64().unwrap_or(0);
    let noop = v["noop_ok"].as_u64().unwrap_or(0);
    let mib = |k: &str| v[k].as_f64().unwrap_or(0.0) / 1024.0;
    row.proxied = format!(
        "{:.1} → {:.1} MiB RSS, {} sessions",
        mib("rss_kib_before"),
        mib("rss_kib_after"),
        thousands(held as f64)
    );
    let per = v["bytes_per_session"].as_f64().unwrap_or(f64::NAN) / 1024.0;
    row.result = format!("{per:.2} KiB/session");
    let complete = held == wanted && noop == held && v["workers_unchanged"].as_bool() == Some(true);
    row.pass = Some(complete && per <= target_kib);
    notes.push(format!(
        "{metric}: {held}/{wanted} sessions opened in {:.1} s, {noop} answered NOOP afterwards; \
         postern status counted {} active; anonymous RSS {:.2} KiB/session; workers {}",
        v["open_secs"].as_f64().unwrap_or(0.0),
        v["postern_active_during"].as_u64().unwrap_or(0),
        v["anon_bytes_per_session"].as_f64().unwrap_or(f64::NAN) / 1024.0,
        if v["workers_unchanged"].as_bool() == Some(true) {
            "unchanged"
        } else {
            "RESTARTED during the run"
        },
    ));
    if let Some(e) = v["first_error"].as_str() {
        notes.push(format!("{metric}: first failure: {e}"));
    }
    if let Some(e) = v["noop_first_error"].as_str() {
        notes.push(format!("{metric}: first NOOP failure: {e}"));
    }
    row
}

pub fn print(args: &ReportArgs) -> Result<()> {
    let logins = load(&args.logins)?;
    let pop3_logins = load(&args.pop3_logins)?;
    let submission_logins = load(&args.submission_logins)?;
    let fetch = load(&args.fetch)?;
    let idle_plain = load(&args.idle_plain)?;
    let idle_tls = load(&args.idle_tls)?;
    let mut notes = Vec::new();

    let clients = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v["concurrency"].as_u64())
            .unwrap_or(32)
    };
    let mib = fetch
        .as_ref()
        .and_then(|v| v["message_bytes"].as_f64())
        .map_or(10.0, |b| b / f64::from(1 << 20));
    let sessions = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v["sessions_wanted"].as_f64())
            .map_or("5,000".into(), thousands)
    };
    let rows = [
        ratio_row(
            &format!(
                "IMAP logins/s, {} clients (connect, LOGIN, SELECT, LOGOUT)",
                clients(&logins)
            ),
            logins.as_ref(),
            "rate",
            LOGIN_RATIO,
            thousands,
            &mut notes,
        ),
        ratio_row(
            &format!(
                "POP3 logins/s, {} clients (connect, USER, PASS, STAT, QUIT)",
                clients(&pop3_logins)
            ),
            pop3_logins.as_ref(),
            "rate",
            LOGIN_RATIO,
            thousands,
            &mut notes,
        ),
        ratio_row(
            &format!(
                "submission logins/s, {} clients (connect, EHLO, AUTH PLAIN, QUIT)",
                clients(&submission_logins)
            ),
            submission_logins.as_ref(),
            "rate",
            LOGIN_RATIO,
            thousands,
            &mut notes,
        ),
        ratio_row(
            &format!("relay: repeated FETCH of a {mib:.0} MiB message, MB/s"),
            fetch.as_ref(),
            "mb_per_s",
            RELAY_RATIO,
            thousands,
            &mut notes,
        ),
        idle_row(
            &format!(
                "worker RSS per idle session, plain client leg ({})",
                sessions(&idle_plain)
            ),
            idle_plain.as_ref(),
            IDLE_PLAIN_KIB,
            &mut notes,
        ),
        idle_row(
            &format!(
                "worker RSS per idle session, TLS client leg ({})",
                sessions(&idle_tls)
            ),
            idle_tls.as_ref(),
            IDLE_TLS_KIB,
            &mut notes,
        ),
    ];
    if let Some(v) = &fetch {
        let cpu = |s: &str| {
            v[s]["client_cpu_share"]
                .as_f64()
                .map_or(NA.into(), |x| format!("{:.0} %", x * 100.0))
        };
        notes.push(format!(
            "relay client: literals read by {}; its CPU: {} of a core direct, {} through postern",
            v["client_reads"].as_str().unwrap_or("copy"),
            cpu("direct"),
            cpu("proxied"),
        ));
    }
    for (name, v) in [
        ("IMAP", &logins),
        ("POP3", &pop3_logins),
        ("submission", &submission_logins),
    ] {
        let Some(v) = v else { continue };
        let lat = |s: &str| {
            let ms = |k: &str| v[s][k].as_f64().map_or(NA.into(), |x| format!("{x:.2}"));
            format!("p50 {} ms, p99 {} ms", ms("p50_ms"), ms("p99_ms"))
        };
        notes.push(format!(
            "{name} login iteration latency: direct {}; through postern {}",
            lat("direct"),
            lat("proxied")
        ));
    }

    println!("| metric | direct | through postern | measured | target | result |");
    println!("|---|---:|---:|---:|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.metric,
            r.direct,
            r.proxied,
            r.result,
            r.target,
            verdict(r.pass)
        );
    }
    if !notes.is_empty() {
        println!();
        for n in &notes {
            println!("- {n}");
        }
    }
    if args.strict && rows.iter().any(|r| r.pass != Some(true)) {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.8), "1,234,568");
    }
}
