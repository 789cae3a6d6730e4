//! The commands that show what clients do through the proxies:
//! `connections` and `failures` (through the daemon), and `proxy-out
//! --stats`'s line.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Result, bail};
use kubesocks_engine::{ActivitySnapshot, ConnState, Engine, FailedConnection, OpenConnection, Program, Via};
use kubesocks_managed::control::{ConnectionActivity, Request, Response};
use kubesocks_managed::state::StateDir;

use crate::args::{ConnectionsArgs, FailuresArgs, Output};
use crate::manage::{call_running, refusal};
use crate::output::{human_bytes, human_duration, say};

/// `kubesocks connections`: the open client connections, or `--close` one.
pub(crate) async fn connections(state: &StateDir, args: &ConnectionsArgs) -> Result<()> {
    if let (Some(id), Some(client)) = (&args.id, args.close) {
        return match call_running(state, &Request::CloseClient { id: id.clone(), client }).await? {
            Some(Response::ClientClosed) => {
                say!("closed client connection {client} of {id}");
                Ok(())
            }
            Some(other) => Err(refusal(other)),
            None => bail!("no kubesocks daemon is running"),
        };
    }
    let mut first = true;
    loop {
        let contexts = activity(state, args.id.as_deref()).await?;
        match args.output {
            Output::Json if args.watch => say!("{}", serde_json::to_string(&open_json(&contexts))?),
            Output::Json => say!("{}", serde_json::to_string_pretty(&open_json(&contexts))?),
            Output::Table => {
                if args.watch && std::io::stdout().is_terminal() {
                    // Clear the screen: the list is drawn afresh each second.
                    print!("\x1b[H\x1b[2J");
                } else if !first {
                    say!("");
                }
                print_open(&contexts);
            }
        }
        if !args.watch {
            return Ok(());
        }
        first = false;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `kubesocks failures`: the latest refused or failed client connections.
pub(crate) async fn failures(state: &StateDir, args: &FailuresArgs) -> Result<()> {
    let contexts = activity(state, args.id.as_deref()).await?;
    match args.output {
        Output::Json => {
            let json: Vec<_> = contexts
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id, "context": c.context,
                        "failures": c.activity.failures, "reasons": c.activity.reasons,
                    })
                })
                .collect();
            say!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Table => print_failures(&contexts),
    }
    Ok(())
}

async fn activity(state: &StateDir, id: Option<&str>) -> Result<Vec<ConnectionActivity>> {
    match call_running(state, &Request::Activity { id: id.map(str::to_string) }).await? {
        Some(Response::Activity { connections }) => Ok(connections),
        Some(other) => Err(refusal(other)),
        None => Ok(Vec::new()),
    }
}

fn open_json(contexts: &[ConnectionActivity]) -> serde_json::Value {
    let json: Vec<_> = contexts
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id, "context": c.context,
                "open": c.activity.open, "open_count": c.activity.open_count,
                "traffic": c.activity.traffic,
            })
        })
        .collect();
    serde_json::Value::Array(json)
}

fn print_open(contexts: &[ConnectionActivity]) {
    if contexts.is_empty() {
        say!("no background proxies; start one with `kubesocks connect`");
        return;
    }
    let mut rows = Vec::new();
    for c in contexts {
        for conn in &c.activity.open {
            rows.push(vec![
                c.id.clone(),
                c.context.clone(),
                conn.id.to_string(),
                program_cell(conn.program.as_ref()),
                via_cell(conn.via, conn.shared_port),
                conn.asked.clone(),
                state_cell(conn.state).to_string(),
                human_bytes(conn.bytes_up),
                human_bytes(conn.bytes_down),
                human_duration(conn.age_ms / 1000),
                pod_cell(conn),
            ]);
        }
    }
    let open: u64 = contexts.iter().map(|c| c.activity.open_count).sum();
    if open == 0 {
        say!("no client connections open");
        return;
    }
    let head = ["ID", "CONTEXT", "CONN", "PROGRAM", "VIA", "ASKED", "STATE", "UP", "DOWN", "AGE", "POD"];
    print_columns(&head, &[2, 7, 8, 9], &rows);
    for c in contexts {
        let unlisted = c.activity.open_count.saturating_sub(c.activity.open.len() as u64);
        if unlisted > 0 {
            say!("{} ({}): {unlisted} more open; the newest are listed", c.id, c.context);
        }
    }
}

fn print_failures(contexts: &[ConnectionActivity]) {
    let mut all: Vec<(&ConnectionActivity, &FailedConnection)> =
        contexts.iter().flat_map(|c| c.activity.failures.iter().map(move |f| (c, f))).collect();
    if all.is_empty() {
        say!("no failed client connections");
        return;
    }
    all.sort_by_key(|(_, f)| std::cmp::Reverse((f.at_ms, f.id)));
    let now_ms = now_ms();
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|(c, f)| {
            vec![
                human_duration(now_ms.saturating_sub(f.at_ms) / 1000),
                c.id.clone(),
                c.context.clone(),
                f.id.to_string(),
                program_cell(f.program.as_ref()),
                f.asked.clone(),
                f.reason.clone(),
            ]
        })
        .collect();
    print_columns(&["AGO", "ID", "CONTEXT", "CONN", "PROGRAM", "ASKED", "REASON"], &[0, 3], &rows);
    // The reasons over every proxy listed, the most common first.
    let mut reasons: BTreeMap<&str, u32> = BTreeMap::new();
    for c in contexts {
        for r in &c.activity.reasons {
            *reasons.entry(&r.reason).or_default() += r.count;
        }
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    say!("");
    let rows: Vec<Vec<String>> = reasons.into_iter().map(|(r, n)| vec![n.to_string(), r.to_string()]).collect();
    print_columns(&["COUNT", "REASON"], &[0], &rows);
}

/// Prints a table whose columns are as wide as their widest cell (the last
/// one as it is); the columns in `right` are aligned right.
fn print_columns(head: &[&str], right: &[usize], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == last {
                out.push_str(cell);
            } else if right.contains(&i) {
                out.push_str(&format!("{}{cell}  ", " ".repeat(pad)));
            } else {
                out.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            }
        }
        out
    };
    say!("{}", line(head.to_vec()));
    for row in rows {
        say!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

fn program_cell(program: Option<&Program>) -> String {
    program.map_or_else(|| "unknown".to_string(), |p| format!("{} ({})", p.name, p.pid))
}

fn via_cell(via: Via, shared_port: bool) -> String {
    let name = match via {
        Via::Socks5 => "socks5",
        Via::HttpConnect => "connect",
        Via::Http => "http",
    };
    if shared_port { format!("{name} shared") } else { name.to_string() }
}

fn pod_cell(conn: &OpenConnection) -> String {
    match (&conn.pod, &conn.reached) {
        (Some(pod), _) if let Some(node) = &conn.node => format!("{pod} on {node}"),
        (Some(pod), _) => pod.clone(),
        (None, Some(reached)) => reached.clone(),
        (None, None) => "-".to_string(),
    }
}

fn state_cell(state: ConnState) -> &'static str {
    match state {
        ConnState::Resolving => "resolving",
        ConnState::Opening => "opening",
        ConnState::Open => "open",
        ConnState::HalfClosed => "half-closed",
        ConnState::Closing => "closing",
    }
}

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

/// `proxy-out --stats SECONDS`: one line on stderr every `every`, until the
/// process ends.
pub(crate) async fn print_stats(engine: &Engine, every: Duration) {
    let mut seen_failures = failures_seen(&engine.activity().await);
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let activity = engine.activity().await;
        let (line, seen) = stats_line(&activity, seen_failures, every);
        seen_failures = seen;
        eprintln!("{line}");
    }
}

/// The newest failure's time and ID: what the next line counts from.
fn failures_seen(activity: &ActivitySnapshot) -> (u64, u64) {
    activity.failures.first().map_or((0, 0), |f| (f.at_ms, f.id))
}

/// One stats line, and the newest failure it has counted.
fn stats_line(activity: &ActivitySnapshot, seen: (u64, u64), every: Duration) -> (String, (u64, u64)) {
    let mut by_program: BTreeMap<String, u32> = BTreeMap::new();
    for conn in &activity.open {
        *by_program.entry(conn.program.as_ref().map_or("unknown".into(), |p| p.name.clone())).or_default() += 1;
    }
    let programs: Vec<String> = by_program.iter().map(|(name, n)| format!("{name} {n}")).collect();
    let window = every.as_secs().max(1) as usize;
    let recent = &activity.traffic[activity.traffic.len().saturating_sub(window)..];
    let (up, down, opened) =
        recent.iter().fold((0, 0, 0u64), |(u, d, o), s| (u + s.bytes_up, d + s.bytes_down, o + u64::from(s.opened)));
    let new_failures: Vec<&FailedConnection> =
        activity.failures.iter().take_while(|f| (f.at_ms, f.id) > seen).collect();
    let mut line = format!(
        "stats: {} open{}, {opened} opened, {} failed; up {}/s, down {}/s",
        activity.open_count,
        if programs.is_empty() { String::new() } else { format!(" ({})", programs.join(", ")) },
        new_failures.len(),
        human_bytes(up / window as u64),
        human_bytes(down / window as u64),
    );
    if let Some(last) = new_failures.first() {
        line.push_str(&format!("; last failure: {}: {}", last.asked, last.reason));
    }
    (line, new_failures.first().map_or(seen, |f| (f.at_ms, f.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubesocks_engine::TrafficSecond;

    fn open(id: u64, program: Option<&str>) -> OpenConnection {
        OpenConnection {
            id,
            program: program.map(|name| Program { pid: 1, name: name.into() }),
            client: "127.0.0.1:1".into(),
            via: Via::Socks5,
            shared_port: false,
            asked: "web:80".into(),
            reached: None,
            pod: None,
            node: None,
            protocol: None,
            bytes_up: 0,
            bytes_down: 0,
            opened_at_ms: 0,
            age_ms: 0,
            state: ConnState::Open,
        }
    }

    fn failed(id: u64, at_ms: u64, reason: &str) -> FailedConnection {
        FailedConnection {
            at_ms,
            id,
            program: None,
            client: "127.0.0.1:1".into(),
            via: Via::Http,
            shared_port: false,
            asked: format!("s{id}:80"),
            reason: reason.into(),
        }
    }

    #[test]
    fn the_stats_line_counts_programs_traffic_and_only_new_failures() {
        let mut activity = ActivitySnapshot {
            open: vec![open(3, Some("curl")), open(2, Some("curl")), open(1, None)],
            open_count: 3,
            failures: vec![failed(9, 2000, "no service s9 in namespace default"), failed(5, 1000, "old")],
            reasons: Vec::new(),
            traffic: (0..10).map(|at| TrafficSecond { at, bytes_up: 1024, bytes_down: 2048, opened: 1 }).collect(),
        };
        let (line, seen) = stats_line(&activity, (1000, 5), Duration::from_secs(5));
        assert_eq!(
            line,
            "stats: 3 open (curl 2, unknown 1), 5 opened, 1 failed; up 1.0 KiB/s, down 2.0 KiB/s; \
             last failure: s9:80: no service s9 in namespace default"
        );
        assert_eq!(seen, (2000, 9));
        activity.open.clear();
        activity.open_count = 0;
        let (line, _) = stats_line(&activity, seen, Duration::from_secs(5));
        assert!(line.starts_with("stats: 0 open, 5 opened, 0 failed;"), "{line}");
    }
}
