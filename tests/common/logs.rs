//! The log output of a test binary, captured for assertions.

use std::sync::{Arc, Mutex, OnceLock};

/// Captures this test binary's log output (every thread, debug level and above) from the
/// first call on. Tests that run at the same time share the buffer, which is never cleared:
/// assert what must (or must not) appear, not what comes last.
pub fn capture_logs() -> Arc<Mutex<String>> {
    capture("debug", false)
}

/// [`capture_logs`] with an `EnvFilter` directive (`"actix_redis_session=trace,debug"`) and,
/// with `span_closes`, a line for every span that closes (its fields and its time). The first
/// call in a test binary decides both.
pub fn capture(filter: &str, span_closes: bool) -> Arc<Mutex<String>> {
    static LOGS: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&logs);
        let spans = if span_closes {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        };
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_span_events(spans)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .init();
        logs
    });
    Arc::clone(logs)
}

struct LogWriter(Arc<Mutex<String>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap()
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
