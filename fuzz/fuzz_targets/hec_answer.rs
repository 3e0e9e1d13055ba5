//! Any bytes as an answer of Splunk's HEC (event, acknowledgement): parsed or refused, never a
//! panic; a parsed answer describes itself.
#![no_main]

use isolation_collector::output::http::hec_answer::{acknowledged, EventAnswer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(a) = EventAnswer::parse(data) {
        let _ = a.describe();
    }
    if let Some(ids) = acknowledged(data) {
        assert!(ids.len() <= data.len(), "{} ids from {} bytes", ids.len(), data.len());
    }
});
