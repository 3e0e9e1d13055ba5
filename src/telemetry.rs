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
//!
//! `--log-format json` writes the same events as JSON lines instead, one object per line:
//! `{"time":"2023-04-03T16:18:50.783Z","level":"INFO","process":"InputProcess","thread":"IsolationPuller(...)","message":"Pull Started"}`
//! followed by the event's structured fields (a field whose name is taken is written as
//! `field_<name>`). Levels keep Devo's names (`WARNING`).

use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::clock::SharedClock;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Devo's text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global logger. `debug` lowers the level to DEBUG (Devo's `globals.debug`);
/// `RUST_LOG` overrides both. `clock` gives the lines' times.
pub fn init(debug: bool, format: LogFormat, clock: SharedClock) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},hyper=warn,reqwest=warn,rustls=warn,h2=warn"
        ))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(DevoLines { format, clock })
        .try_init();
}

/// The span field that names a log line's thread.
struct ThreadName(String);

struct DevoLines {
    format: LogFormat,
    clock: SharedClock,
}

/// An event's fields: the message, the thread (spans), and the rest in order.
#[derive(Default)]
struct Fields {
    message: String,
    thread: Option<String>,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Fields {
    fn record_value(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(s)) => self.message.push_str(&s),
            ("message", v) => self.message.push_str(&v.to_string()),
            ("thread", serde_json::Value::String(s)) => self.thread = Some(s),
            ("thread", v) => self.thread = Some(v.to_string()),
            (name, v) => self.rest.push((name, v)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_value(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_value(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_value(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_value(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Non-finite numbers have no JSON form: keep their text.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| value.to_string().into(), serde_json::Value::Number);
        self.record_value(field, v);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_value(field, format!("{value:?}").into());
    }
}

/// Devo's text line (without the trailing newline).
fn text_line(time: &str, level: &str, process: &str, thread: &str, fields: &Fields) -> String {
    let mut line = format!(
        "{time} {level:>7} {process}::{thread} -> {}",
        fields.message
    );
    for (name, value) in &fields.rest {
        match value {
            serde_json::Value::String(s) => line.push_str(&format!(" {name}={s}")),
            other => line.push_str(&format!(" {name}={other}")),
        }
    }
    line
}

/// The JSON line (without the trailing newline).
fn json_line(time: &str, level: &str, process: &str, thread: &str, fields: &Fields) -> String {
    const TAKEN: [&str; 5] = ["time", "level", "process", "thread", "message"];
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let mut line = format!(
        "{{\"time\":{},\"level\":{},\"process\":{},\"thread\":{},\"message\":{}",
        string(time),
        string(level),
        string(process),
        string(thread),
        string(&fields.message)
    );
    for (name, value) in &fields.rest {
        let key = if TAKEN.contains(name) {
            format!("field_{name}")
        } else {
            (*name).to_owned()
        };
        line.push_str(&format!(",{}:{value}", string(&key)));
    }
    line.push('}');
    line
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
            Some(t) if t.starts_with("DevoSender") => ("OutputProcess", t),
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
        let now = self.clock.now();
        let mut line = match self.format {
            LogFormat::Text => {
                let time = now.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
                text_line(&time, level, process, &thread, &fields)
            }
            LogFormat::Json => {
                let time = now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                json_line(&time, level, process, &thread, &fields)
            }
        };
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
        if *event.metadata().level() <= Level::WARN {
            let time_ms = now.timestamp_millis();
            crate::internal::forward(event.metadata(), time_ms, level, &thread, &fields.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            message: "Pull \"Started\"\nnext".into(),
            thread: None,
            rest: vec![
                ("count", 3.into()),
                ("error", "refused".into()),
                ("level", true.into()),
            ],
        }
    }

    #[test]
    fn the_text_line_has_devos_shape() {
        assert_eq!(
            text_line("2023-04-03T16:18:50.783", "INFO", "MainProcess", "MainThread", &fields()),
            "2023-04-03T16:18:50.783    INFO MainProcess::MainThread -> Pull \"Started\"\nnext count=3 error=refused level=true"
        );
    }

    #[test]
    fn the_json_line_is_one_object_with_the_fields() {
        let line = json_line(
            "2023-04-03T16:18:50.783Z",
            "WARNING",
            "InputProcess",
            "IsolationPuller(a,1,url_isolation,predefined)",
            &fields(),
        );
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2023-04-03T16:18:50.783Z",
                "level": "WARNING",
                "process": "InputProcess",
                "thread": "IsolationPuller(a,1,url_isolation,predefined)",
                "message": "Pull \"Started\"\nnext",
                "count": 3,
                "error": "refused",
                "field_level": true,
            })
        );
        assert!(line.starts_with("{\"time\":"));
    }
}
