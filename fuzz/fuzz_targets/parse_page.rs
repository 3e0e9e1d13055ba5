//! Any response body: `parse_page` returns a page or an error, never panics; every event of a
//! page is one line of valid JSON; and the one-pass scanner gives exactly what the serde_json
//! reference parser gives (the same page, or an error with the same text).
#![no_main]

use isolation_collector::event::{parse_page, parse_page_reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = bytes::Bytes::copy_from_slice(data);
    let fast = parse_page(body.clone());
    let reference = parse_page_reference(body);
    match (&fast, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the parsers disagree: {fast:?} vs {reference:?}"),
    }
    if let Ok(page) = fast {
        for event in &page.events {
            assert!(!event.json.contains(&b'\n'), "an event spans lines");
            serde_json::from_slice::<serde_json::Value>(&event.json)
                .expect("an event is valid JSON");
        }
    }
});
