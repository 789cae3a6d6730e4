//! Logs to stderr and to files under the state directory.
//!
//! A daemon hosts many connections in one process, and each keeps its own log
//! file: the daemon runs a connection's work inside [`connection_span`], and
//! [`ConnectionFiles`] copies every event inside such a span to that
//! connection's file, besides the daemon's own log. Every file is a
//! size-bounded `LogFile` (see `log_files`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::log_files::LogFile;

/// Sets up logging for the process: stderr (if `to_stderr`), `log_dir/file_name`,
/// and the per-connection files. `verbose` 0 logs kubesocks at info, 1 at
/// debug, 2+ at trace; `RUST_LOG` overrides. Keep the guard alive: dropping it
/// flushes the file. A second call does nothing.
pub fn init(verbose: u8, to_stderr: bool, log_dir: Option<&Path>, file_name: &str) -> Option<WorkerGuard> {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("warn,kubesocks={level}")));
    // Colour only for a terminal: a redirected stderr (a file, a pipe, a
    // service manager's journal) gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let stderr = to_stderr
        .then(|| tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter()));
    let opened = log_dir.map(|dir| dir.join(file_name)).map(|path| (LogFile::open(&path), path));
    let (file, guard) = match opened {
        Some((Ok(log), _)) => {
            let (writer, guard) = tracing_appender::non_blocking(log);
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .fmt_fields(PlainFields::default())
                .with_writer(writer)
                .with_filter(filter());
            (Some(layer), Some(guard))
        }
        Some((Err(e), path)) => {
            // Logging to stderr only beats not running at all.
            eprintln!("kubesocks: cannot open the log file {}: {e}; logging to stderr only", path.display());
            (None, None)
        }
        None => (None, None),
    };
    let connections = ConnectionFiles.with_filter(filter());
    let _ = tracing_subscriber::registry().with(stderr).with(file).with(connections).try_init();
    guard
}

/// The default field format under a type of its own. Each fmt layer caches a
/// span's rendered fields by formatter type: sharing the type with the
/// stderr layer would put its colour codes into the file.
#[derive(Default)]
struct PlainFields(DefaultFields);

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
}

/// The name of the span [`connection_span`] makes.
const SPAN_NAME: &str = "connection";

/// Open per-connection log files, by connection ID.
static FILES: LazyLock<Mutex<HashMap<String, LogFile>>> = LazyLock::new(Default::default);

/// Opens (appending) the log file of connection `id` and returns the span to
/// run its work in. Events in the span go to the file until [`close_connection_log`].
pub fn connection_span(id: &str, log: &Path) -> std::io::Result<tracing::Span> {
    let file = LogFile::open(log)?;
    FILES.lock().unwrap().insert(id.to_string(), file);
    Ok(tracing::info_span!(SPAN_NAME, id))
}

/// Stops writing connection `id`'s log file (it stays on disk).
pub fn close_connection_log(id: &str) {
    FILES.lock().unwrap().remove(id);
}

/// The layer that copies events inside a connection span to its file.
pub struct ConnectionFiles;

/// The connection ID a span was opened with, kept in its extensions.
struct ConnectionId(String);

impl<S> Layer<S> for ConnectionFiles
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN_NAME {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(span), Some(conn)) = (ctx.span(id), fields.id) {
            span.extensions_mut().insert(ConnectionId(conn));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        let Some(conn) =
            scope.from_root().find_map(|span| span.extensions().get::<ConnectionId>().map(|c| c.0.clone()))
        else {
            return;
        };
        let mut files = FILES.lock().unwrap();
        let Some(file) = files.get_mut(&conn) else { return };
        let mut line = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut line));
        let meta = event.metadata();
        let _ = write!(line, " {:>5} {}:", meta.level(), meta.target());
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.push_str(&fields.text);
        line.push('\n');
        // One write per line, appending: lines from many tasks never interleave.
        let _ = file.write_all(line.as_bytes());
    }
}

/// Renders an event's fields as ` message key=value ...`, and picks up a
/// connection span's `id`.
#[derive(Default)]
struct Fields {
    text: String,
    id: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => {
                let _ = write!(self.text, " {value}");
            }
            "id" => self.id = Some(value.to_string()),
            name => {
                let _ = write!(self.text, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.text, " {value:?}");
            }
            "id" => self.id = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.text, " {name}={value:?}");
            }
        }
    }
}
