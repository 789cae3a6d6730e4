//! Logs to stderr and to a file under the state directory.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `verbose` 0 logs kubesocks at info, 1 at debug, 2+ at trace; `RUST_LOG`
/// overrides. Keep the guard alive: dropping it flushes the file.
pub fn init(verbose: u8, log_dir: Option<&Path>, file_name: &str) -> Option<WorkerGuard> {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("warn,kubesocks={level}")));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter());
    let (file, guard) = match log_dir {
        Some(dir) => {
            let (writer, guard) = tracing_appender::non_blocking(tracing_appender::rolling::never(dir, file_name));
            let layer = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer).with_filter(filter());
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(stderr).with(file).try_init();
    guard
}

use tracing_subscriber::Layer as _;
