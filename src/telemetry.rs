//! Logging in Devo's line format, so that operators' searches and dashboards keep working:
//!
//! ```text
//! 2023-04-03T16:18:50.783    INFO InputProcess::IsolationPuller(proofpoint_isolation,10001,url_isolation,predefined) -> Pull Started
//! ```
//!
//! `%(asctime)s.%(msecs)03d %(levelname)7s %(processName)s::%(threadName)s -> msg`
//! (devo-platform.md §3.1). The "process" and "thread" come from the innermost span that has a
//! `thread` field (each service's puller runs in one); other lines are `MainProcess::MainThread`.
//! Structured fields of an event are appended as `key=value`. Lines go to standard error, so
//! the console output on standard output stays machine-readable.

use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global logger. `debug` lowers the level to DEBUG (Devo's `globals.debug`);
/// `RUST_LOG` overrides both.
pub fn init(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},hyper=warn,reqwest=warn,rustls=warn,h2=warn"
        ))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(DevoLines)
        .try_init();
}

/// The span field that names a log line's thread.
struct ThreadName(String);

struct DevoLines;

#[derive(Default)]
struct Fields {
    message: String,
    thread: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "thread" => self.thread = Some(value.to_owned()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "thread" => self.thread = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

impl<S> Layer<S> for DevoLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(thread), Some(span)) = (fields.thread, ctx.span(id)) {
            span.extensions_mut().insert(ThreadName(thread));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let thread = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .filter_map(|s| s.extensions().get::<ThreadName>().map(|t| t.0.clone()))
                .last()
        });
        let (process, thread) = match thread {
            Some(t) => ("InputProcess", t),
            None => ("MainProcess", "MainThread".to_owned()),
        };
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f");
        let line = format!(
            "{now} {level:>7} {process}::{thread} -> {}{}\n",
            fields.message, fields.rest
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        if *event.metadata().level() <= Level::WARN {
            crate::internal::forward(event.metadata(), level, &thread, &fields.message);
        }
    }
}
