//! Devo's `environment`: every delivered event gets `"@devo_environment": <value>` as its last
//! member (Devo adds it to the event dict before `json.dumps`, which keeps insertion order).
//!
//! Applied after the dedup plan and after obfuscation, like obfuscation: the dedup keys stay on
//! the vendor's original bytes, so a re-read of the same event is still recognised. One copy of
//! each event's bytes, no re-parse: the events are compact JSON objects, so the member goes
//! before the closing `}`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Event;

/// The JSON member to append, prepared once.
#[derive(Clone, Debug)]
pub struct Environment {
    /// `"@devo_environment":"<value, JSON-escaped>"`.
    member: Vec<u8>,
}

impl Environment {
    pub fn new(value: &str) -> Environment {
        let mut member = br#""@devo_environment":"#.to_vec();
        // Serialising a string cannot fail.
        member.extend(serde_json::to_vec(value).unwrap_or_default());
        Environment { member }
    }

    /// Adds the member to one event's JSON object.
    pub fn apply(&self, json: &[u8]) -> Bytes {
        let body = json.trim_ascii_end();
        let Some(inner) = body.strip_suffix(b"}") else {
            // Not an object (parse_page only passes objects); left as it came.
            return Bytes::copy_from_slice(json);
        };
        let empty = inner.trim_ascii_end().ends_with(b"{");
        let mut out = BytesMut::with_capacity(body.len() + self.member.len() + 1);
        out.put_slice(inner);
        if !empty {
            out.put_u8(b',');
        }
        out.put_slice(&self.member);
        out.put_u8(b'}');
        out.freeze()
    }

    pub fn apply_batch(&self, batch: &mut [Event]) {
        for e in batch {
            e.json = self.apply(&e.json);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_member_goes_last_and_is_escaped() {
        let env = Environment::new("prod \"eu\"\n");
        assert_eq!(
            &env.apply(br#"{"a":1,"b":{"c":"}"}}"#)[..],
            br#"{"a":1,"b":{"c":"}"},"@devo_environment":"prod \"eu\"\n"}"#
        );
        assert_eq!(
            &env.apply(b"{}")[..],
            br#"{"@devo_environment":"prod \"eu\"\n"}"#
        );
    }

    proptest! {
        #[test]
        fn the_result_is_the_object_plus_the_member(
            members in proptest::collection::btree_map("[a-z@\"\\\\ ]{0,8}", "[ -~]{0,12}", 0..6),
            value in "\\PC{0,16}",
        ) {
            let original = serde_json::to_vec(&members).unwrap();
            let out = Environment::new(&value).apply(&original);
            let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out).unwrap();
            let mut want: serde_json::Map<String, serde_json::Value> = members
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            want.insert("@devo_environment".into(), serde_json::Value::String(value));
            prop_assert_eq!(parsed, want);
        }
    }
}
