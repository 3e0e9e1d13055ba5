//! Logging in Devo's line format, so that operators' searches and dashboards keep working:
//!
//! ```text
//! 2023-04-03T16:18:50.783    INFO InputProcess::IsolationPuller(proofpoint_isolation,10001,url_isolation,predefined) -> Pull Started
//! ```
//!
//! `%(asctime)s.%(msecs)03d %(levelname)7s %(processName)s::%(threadName)s -> msg`
//! (devo-platform.md §3.1). The "process" and "thread" come from the innermost span made by
//! [`puller_span`], [`setup_span`] or [`monitor_span`] (each service's puller runs in one): such a
//! span carries its role, input and service (or output) as fields, and this layer builds Devo's
//! thread name from them ([`DevoThread`]); other lines are `MainProcess::MainThread`. Internal
//! messages get the same fields, never text parsed back: the layer hands each WARN and ERROR
//! line to its [`InternalTap`], which [`init`] returns, and the internal-message sender
//! ([`crate::devo::internal_messages`]) connects its channel to that tap. Logging knows nothing of outputs, and
//! no process-wide sender joins two collectors that share a process.
//! Structured fields of an event are appended as `key=value`. Lines go to standard error, so
//! the console output on standard output stays machine-readable.
//!
//! `--log-format json` writes the same events as JSON lines instead, one object per line:
//! `{"time":"2023-04-03T16:18:50.783Z","level":"INFO","process":"InputProcess","thread":"IsolationPuller(...)","message":"Pull Started"}`
//! followed by the event's structured fields (a field whose name is taken is written as
//! `field_<name>`). Levels keep Devo's names (`WARNING`).

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::clock::SharedClock;
use crate::service::Service;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Devo's text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `tracing` target of the internal sender's own lines: never handed to the tap, so an
/// unreachable Devo cannot feed a loop of messages about itself.
pub const SENDER_TARGET: &str = "isolation_collector::internal_sender";

/// One WARN or ERROR line, as the layer hands it to its [`InternalTap`].
#[derive(Debug, Clone)]
pub struct InternalMessage {
    pub time_ms: i64,
    pub level: &'static str,
    /// Devo's `module_name`: the line's thread without its arguments (`IsolationPuller`).
    pub module: &'static str,
    /// Devo's `service_name`: the service the line's thread works for (empty when none).
    pub service: String,
    /// The input id of that service (empty when none).
    pub input_id: String,
    pub message: String,
}

/// Where a logging layer hands its WARN and ERROR lines for delivery as internal messages.
/// Until a sender connects, the lines only go to standard error. Handing over never waits: a
/// full channel drops the message and counts it ([`InternalTap::dropped`]).
#[derive(Clone, Debug, Default)]
pub struct InternalTap(Arc<Tap>);

#[derive(Debug, Default)]
struct Tap {
    sender: OnceLock<mpsc::Sender<InternalMessage>>,
    dropped: AtomicU64,
}

impl InternalTap {
    /// The receiving end of a channel of `capacity` messages, for the one sender this tap
    /// feeds; `None` when a sender is connected already.
    pub fn connect(&self, capacity: usize) -> Option<mpsc::Receiver<InternalMessage>> {
        let (tx, rx) = mpsc::channel(capacity);
        self.0.sender.set(tx).ok().map(|()| rx)
    }

    /// Messages dropped so far because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    fn hand_over(&self, meta: &tracing::Metadata<'_>, message: impl FnOnce() -> InternalMessage) {
        let Some(tx) = self.0.sender.get() else {
            return;
        };
        if meta.target() == SENDER_TARGET {
            return;
        }
        if tx.try_send(message()).is_err() {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Installs the global logger. `debug` lowers the level to DEBUG (Devo's `globals.debug`);
/// `RUST_LOG` overrides both. `clock` gives the lines' times. Returns the layer's tap, for the
/// internal-message sender.
pub fn init(debug: bool, format: LogFormat, clock: SharedClock) -> InternalTap {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},hyper=warn,reqwest=warn,rustls=warn,h2=warn"
        ))
    });
    let tap = InternalTap::default();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(DevoLines {
            format,
            writer: std::io::stderr,
            clock,
            tap: tap.clone(),
        })
        .try_init();
    tap
}

/// The span of one service's puller (Devo's `IsolationPuller` thread).
pub fn puller_span(input: &str, input_id: &str, service: Service) -> tracing::Span {
    tracing::info_span!("puller", role = ROLE_PULLER, input, input_id, service = %service)
}

/// The span of one service's setup check (Devo's `IsolationPullerSetup` thread).
pub fn setup_span(input: &str, input_id: &str, service: Service) -> tracing::Span {
    tracing::info_span!("setup", role = ROLE_SETUP, input, input_id, service = %service)
}

/// The span of the sender statistics of one network output (Devo's sender manager monitor).
pub fn monitor_span(output: &str) -> tracing::Span {
    tracing::info_span!("monitor", role = ROLE_MONITOR, output)
}

const ROLE_PULLER: &str = "puller";
const ROLE_SETUP: &str = "setup";
const ROLE_MONITOR: &str = "monitor";

/// Which of Devo's threads a log line comes from, built from its innermost span's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevoThread {
    /// Outside any role span: `MainProcess::MainThread`.
    Main,
    /// A service's puller.
    Puller {
        input: String,
        input_id: String,
        service: String,
    },
    /// A service's setup check.
    Setup {
        input: String,
        input_id: String,
        service: String,
    },
    /// The sender statistics of an output.
    Monitor { output: String },
}

impl DevoThread {
    /// Devo's thread name, as its log lines show it.
    pub fn name(&self) -> String {
        match self {
            DevoThread::Main => "MainThread".to_owned(),
            DevoThread::Puller {
                input,
                input_id,
                service,
            } => format!("IsolationPuller({input},{input_id},{service},predefined)"),
            DevoThread::Setup {
                input,
                input_id,
                service,
            } => format!("IsolationPullerSetup(unknown,{input}#{input_id},{service}#predefined)"),
            DevoThread::Monitor { output } => {
                format!("DevoSenderManagerMonitor(standard_senders,{output})")
            }
        }
    }

    /// Devo's process of the thread.
    pub fn process(&self) -> &'static str {
        match self {
            DevoThread::Main => "MainProcess",
            DevoThread::Puller { .. } | DevoThread::Setup { .. } => "InputProcess",
            DevoThread::Monitor { .. } => "OutputProcess",
        }
    }

    /// The module of an internal message: the thread name without its arguments.
    pub fn module(&self) -> &'static str {
        match self {
            DevoThread::Main => "MainThread",
            DevoThread::Puller { .. } => "IsolationPuller",
            DevoThread::Setup { .. } => "IsolationPullerSetup",
            DevoThread::Monitor { .. } => "DevoSenderManagerMonitor",
        }
    }

    /// The input id of the service the thread works for (empty when none).
    pub fn input_id(&self) -> &str {
        match self {
            DevoThread::Puller { input_id, .. } | DevoThread::Setup { input_id, .. } => input_id,
            DevoThread::Main | DevoThread::Monitor { .. } => "",
        }
    }

    /// The service the thread works for (empty when none).
    pub fn service(&self) -> &str {
        match self {
            DevoThread::Puller { service, .. } | DevoThread::Setup { service, .. } => service,
            DevoThread::Main | DevoThread::Monitor { .. } => "",
        }
    }
}

/// The fields of a role span, as recorded.
#[derive(Default)]
struct SpanFields {
    role: String,
    input: String,
    input_id: String,
    service: String,
    output: String,
}

impl SpanFields {
    /// The thread of a role span; `None` for any other span.
    fn thread(self) -> Option<DevoThread> {
        let SpanFields {
            role,
            input,
            input_id,
            service,
            output,
        } = self;
        match role.as_str() {
            ROLE_PULLER => Some(DevoThread::Puller {
                input,
                input_id,
                service,
            }),
            ROLE_SETUP => Some(DevoThread::Setup {
                input,
                input_id,
                service,
            }),
            ROLE_MONITOR => Some(DevoThread::Monitor { output }),
            _ => None,
        }
    }
}

impl Visit for SpanFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "role" => &mut self.role,
            "input" => &mut self.input,
            "input_id" => &mut self.input_id,
            "service" => &mut self.service,
            "output" => &mut self.output,
            _ => return,
        };
        *slot = format!("{value:?}");
    }
}

/// The layer that writes Devo's lines to `writer` (standard error, or a buffer in tests).
struct DevoLines<W> {
    format: LogFormat,
    writer: W,
    clock: SharedClock,
    tap: InternalTap,
}

/// An event's fields: the message and the rest in order.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, serde_json::Value)>,
}

impl Fields {
    fn record_value(&mut self, field: &Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(s)) => self.message.push_str(&s),
            ("message", v) => self.message.push_str(&v.to_string()),
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

impl<S, W> Layer<S> for DevoLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = SpanFields::default();
        attrs.record(&mut fields);
        if let (Some(thread), Some(span)) = (fields.thread(), ctx.span(id)) {
            span.extensions_mut().insert(thread);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let origin = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .from_root()
                    .filter_map(|s| s.extensions().get::<DevoThread>().cloned())
                    .last()
            })
            .unwrap_or(DevoThread::Main);
        let (process, thread) = (origin.process(), origin.name());
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
        let _ = self.writer.make_writer().write_all(line.as_bytes());
        if *event.metadata().level() <= Level::WARN {
            self.tap.hand_over(event.metadata(), || InternalMessage {
                time_ms: now.timestamp_millis(),
                level,
                module: origin.module(),
                service: origin.service().to_owned(),
                input_id: origin.input_id().to_owned(),
                message: fields.message.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Fields {
        Fields {
            message: "Pull \"Started\"\nnext".into(),
            rest: vec![
                ("count", 3.into()),
                ("error", "refused".into()),
                ("level", true.into()),
            ],
        }
    }

    /// Each layer hands its WARN and ERROR lines to its own tap, and only once a sender has
    /// connected; INFO lines and the sender's own lines are never handed over.
    #[test]
    fn each_layer_hands_its_warnings_to_its_own_tap() {
        let taps = [InternalTap::default(), InternalTap::default()];
        let mut receivers: Vec<_> = taps.iter().map(|t| t.connect(8).unwrap()).collect();
        assert!(taps[0].connect(8).is_none(), "a tap feeds one sender");
        for (i, tap) in taps.iter().enumerate() {
            let layer = DevoLines {
                format: LogFormat::Text,
                writer: std::io::sink,
                clock: SharedClock::system(),
                tap: tap.clone(),
            };
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
                tracing::info!("not handed over");
                tracing::warn!(target: SENDER_TARGET, "the sender's own line");
                tracing::warn!("warning of collector {i}");
            });
        }
        for (i, rx) in receivers.iter_mut().enumerate() {
            let m = rx.try_recv().expect("the warning reached its own tap");
            assert_eq!(m.message, format!("warning of collector {i}"));
            assert_eq!(m.level, "WARNING");
            assert!(
                rx.try_recv().is_err(),
                "tap {i} got more than its one warning"
            );
        }
    }

    /// The lines a layer wrote, one per string (time stripped: it is the clock's).
    fn lines_logged_in(f: impl FnOnce()) -> Vec<String> {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buf = buf.clone();
            move || SharedBuf(buf.clone())
        };
        let layer = DevoLines {
            format: LogFormat::Text,
            writer,
            clock: SharedClock::system(),
            tap: InternalTap::default(),
        };
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| l.split_once(' ').unwrap().1.to_owned())
            .collect()
    }

    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn role_spans_name_devos_process_and_thread_from_their_fields() {
        let lines = lines_logged_in(|| {
            tracing::info!("main");
            let puller = puller_span("proofpoint_isolation", "10001", Service::UrlIsolation);
            puller.in_scope(|| {
                tracing::info!("Pull Started");
                // The innermost role span wins.
                setup_span("proofpoint_isolation", "10001", Service::UrlIsolation)
                    .in_scope(|| tracing::warn!(count = 2, "in setup"));
                tracing::info_span!("other").in_scope(|| tracing::info!("nested"));
            });
            monitor_span("relay").in_scope(|| tracing::info!("stats"));
        });
        assert_eq!(
            lines,
            [
                "   INFO MainProcess::MainThread -> main",
                "   INFO InputProcess::IsolationPuller(proofpoint_isolation,10001,url_isolation,predefined) -> Pull Started",
                "WARNING InputProcess::IsolationPullerSetup(unknown,proofpoint_isolation#10001,url_isolation#predefined) -> in setup count=2",
                "   INFO InputProcess::IsolationPuller(proofpoint_isolation,10001,url_isolation,predefined) -> nested",
                "   INFO OutputProcess::DevoSenderManagerMonitor(standard_senders,relay) -> stats",
            ]
        );
    }

    #[test]
    fn a_thread_gives_internal_messages_its_module_and_service() {
        let setup = DevoThread::Setup {
            input: "proofpoint_isolation".into(),
            input_id: "10001".into(),
            service: "browser_and_email_isolation".into(),
        };
        assert_eq!(
            (setup.module(), setup.service()),
            ("IsolationPullerSetup", "browser_and_email_isolation")
        );
        let monitor = DevoThread::Monitor {
            output: "relay".into(),
        };
        assert_eq!(
            (monitor.module(), monitor.service()),
            ("DevoSenderManagerMonitor", "")
        );
        assert_eq!(
            (DevoThread::Main.module(), DevoThread::Main.service()),
            ("MainThread", "")
        );
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
