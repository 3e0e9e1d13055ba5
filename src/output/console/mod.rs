//! The `console` output: one JSON object per event on standard output, in the shape Devo's
//! console sender logs (`message_timestamp`, `message_tag`, `message_content`), so that it can be
//! piped into `jq`. Logs go to standard error and never mix with it.

use std::io::Write;

pub mod config;

pub use self::config::ConsoleConfig;
use super::builder::{Healthcheck, OutputBuilder, OutputContext};
use super::OutputError;
use crate::clock::SharedClock;
use crate::event::Event;

pub struct ConsoleOutput {
    name: String,
    /// Stamps `message_timestamp`.
    clock: SharedClock,
}

impl ConsoleOutput {
    pub fn new(name: String, clock: SharedClock) -> Self {
        Self { name, clock }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn deliver(
        &mut self,
        table: &str,
        events: &[Event],
    ) -> Result<Option<u64>, OutputError> {
        let now = self.clock.now().format("%Y-%m-%d %H:%M:%S%.3f").to_string();
        let prefix = format!(
            r#"{{"message_timestamp":"{now}","message_tag":{},"message_content":"#,
            serde_json::Value::from(table)
        );
        let mut buf =
            Vec::with_capacity(events.iter().map(|e| e.json.len() + prefix.len() + 2).sum());
        for event in events {
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(&event.json);
            buf.extend_from_slice(b"}\n");
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        lock.write_all(&buf)
            .and_then(|()| lock.flush())
            .map_err(|source| OutputError::Io {
                output: self.name.clone(),
                action: "writing to standard output".into(),
                source,
            })?;
        Ok(None)
    }
}

impl OutputBuilder for ConsoleConfig {
    type Output = ConsoleOutput;

    fn build(&self, name: &str, cx: &OutputContext) -> Result<ConsoleOutput, OutputError> {
        Ok(ConsoleOutput::new(name.to_owned(), cx.clock.clone()))
    }

    /// Standard output is always there: nothing to check.
    fn healthcheck(&self, _: &str, _: &OutputContext) -> Result<Healthcheck, OutputError> {
        Ok(Box::pin(std::future::ready(Ok(()))))
    }
}
