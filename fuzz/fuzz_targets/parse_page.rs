//! Any response body: `parse_page` returns a page or an error, never panics; every event of a
//! page is one line of valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = isolation_collector::event::parse_page(bytes::Bytes::copy_from_slice(data)) {
        for event in &page.events {
            assert!(!event.json.contains(&b'\n'), "an event spans lines");
            serde_json::from_slice::<serde_json::Value>(&event.json)
                .expect("an event is valid JSON");
        }
    }
});
