//! Splunk HEC's answers, parsed: pure functions over the response bodies, fuzzed (proptest
//! below) because they are what a remote peer controls.
//!
//! Formats (Splunk Enterprise "Getting Data In", HTTP Event Collector: "Format events",
//! "About HEC Indexer Acknowledgment", "Troubleshoot HEC"):
//! - `/services/collector/event`: `{"text":"Success","code":0}`, with `"ackId":N` when the
//!   token has indexer acknowledgement; errors `{"text":"Invalid token","code":4}`, and for a
//!   bad event in a batch also `"invalid-event-number":I` (0-based).
//! - `/services/collector/ack`: the request `{"acks":[0,1]}` is answered
//!   `{"acks":{"0":true,"1":false}}`.
//! - `/services/collector/health`: `{"text":"HEC is healthy","code":17}`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The answer to an event request (any status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct EventAnswer {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default, rename = "ackId")]
    pub ack_id: Option<u64>,
    #[serde(default, rename = "invalid-event-number")]
    pub invalid_event_number: Option<u64>,
}

impl EventAnswer {
    /// Parses a body; `None` if it is not HEC's JSON object (a proxy's HTML page, say).
    pub fn parse(body: &[u8]) -> Option<EventAnswer> {
        serde_json::from_slice(body).ok()
    }

    /// "Invalid token (code 4)", "event 3: Invalid data format (code 6)" for errors.
    pub fn describe(&self) -> String {
        let text = self.text.as_deref().unwrap_or("(no text)");
        let mut s = match self.code {
            Some(c) => format!("{text} (code {c})"),
            None => text.to_owned(),
        };
        if let Some(i) = self.invalid_event_number {
            s = format!("event {i} of the request: {s}");
        }
        s
    }
}

/// The acknowledged ids of an ack answer (`true` ones); `None` if the body is not one.
pub fn acknowledged(body: &[u8]) -> Option<Vec<u64>> {
    #[derive(Deserialize)]
    struct Acks {
        acks: BTreeMap<String, bool>,
    }
    let acks: Acks = serde_json::from_slice(body).ok()?;
    Some(
        acks.acks
            .into_iter()
            .filter(|(_, done)| *done)
            .filter_map(|(id, _)| id.parse().ok())
            .collect(),
    )
}

/// The body of an ack query for `ids`.
pub fn ack_query(ids: &[u64]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "acks": ids })).expect("a list of numbers")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn splunk_answers_parse() {
        let a = EventAnswer::parse(br#"{"text":"Success","code":0,"ackId":7}"#).unwrap();
        assert_eq!((a.code, a.ack_id), (Some(0), Some(7)));
        let e = EventAnswer::parse(
            br#"{"text":"Invalid data format","code":6,"invalid-event-number":3}"#,
        )
        .unwrap();
        assert_eq!(
            e.describe(),
            "event 3 of the request: Invalid data format (code 6)"
        );
        assert_eq!(EventAnswer::parse(b"<html>busy</html>"), None);
        assert_eq!(
            acknowledged(br#"{"acks":{"0":true,"1":false,"12":true}}"#),
            Some(vec![0, 12])
        );
        assert_eq!(
            acknowledged(br#"{"text":"ACK is disabled","code":14}"#),
            None
        );
        assert_eq!(ack_query(&[1, 2]), br#"{"acks":[1,2]}"#);
    }

    proptest! {
        /// Any body: no panic, and an answer that parses describes itself.
        #[test]
        fn any_body_is_handled(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(a) = EventAnswer::parse(&body) {
                let _ = a.describe();
            }
            let _ = acknowledged(&body);
        }

        /// Mutated Splunk answers: ack ids survive exactly when the JSON does.
        #[test]
        fn ack_answers_round_trip(ids in proptest::collection::btree_map(0u64..1_000_000, any::<bool>(), 0..20),
                                  cut in 0usize..400) {
            let acks: BTreeMap<String, bool> = ids.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let body = serde_json::to_vec(&serde_json::json!({ "acks": acks })).unwrap();
            let want: Vec<u64> = ids.iter().filter(|(_, v)| **v).map(|(k, _)| *k).collect();
            let mut got = acknowledged(&body).unwrap();
            got.sort_unstable();
            prop_assert_eq!(got, want);
            // A truncated answer is never taken for a (different) list of acks.
            if cut < body.len() {
                prop_assert_eq!(acknowledged(&body[..cut]), None);
            }
        }

        /// Event answers with any text and numbers parse back to the same fields.
        #[test]
        fn event_answers_round_trip(text in ".{0,40}", code in any::<i64>(), ack in proptest::option::of(any::<u64>())) {
            let mut v = serde_json::json!({ "text": text, "code": code });
            if let Some(a) = ack {
                v["ackId"] = a.into();
            }
            let a = EventAnswer::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
            prop_assert_eq!(a.text.as_deref(), Some(text.as_str()));
            prop_assert_eq!((a.code, a.ack_id), (Some(code), ack));
        }
    }
}
