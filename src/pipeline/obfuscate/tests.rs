use super::*;

fn ev(json: &str) -> Event {
    Event::from_json(Bytes::copy_from_slice(json.as_bytes())).unwrap()
}

fn path(p: &[&str]) -> Vec<PathSegment> {
    p.iter().map(|s| PathSegment::parse(s)).collect()
}

fn mask(p: &[&str]) -> ObfuscationRule {
    ObfuscationRule {
        path: path(p),
        action: Action::Mask { value: None },
    }
}

fn mask_with(p: &[&str], value: serde_json::Value) -> ObfuscationRule {
    ObfuscationRule {
        path: path(p),
        action: Action::Mask { value: Some(value) },
    }
}

fn patterns(p: &[&str], res: &[&str]) -> ObfuscationRule {
    ObfuscationRule {
        path: path(p),
        action: Action::Patterns {
            regexes: res.iter().map(|r| regex::Regex::new(r).unwrap()).collect(),
            replacement: MASK.to_owned(),
        },
    }
}

fn hmac(p: &[&str], secret: &str) -> ObfuscationRule {
    ObfuscationRule {
        path: path(p),
        action: Action::Hmac {
            key: HmacKey::new(secret.as_bytes()),
        },
    }
}

fn run(rules: Vec<ObfuscationRule>, json: &str) -> String {
    let out = Obfuscator::new(rules).apply(&ev(json)).unwrap();
    String::from_utf8(out.json.to_vec()).unwrap()
}

#[test]
fn masks_each_json_type_with_devos_defaults() {
    let json = r#"{"s":"secret","i":42,"f":4.5,"e":1E3,"b":true,"n":null}"#;
    let rules = ["s", "i", "f", "e", "b", "n"]
        .iter()
        .map(|k| mask(&[k]))
        .collect();
    assert_eq!(
        run(rules, json),
        r#"{"s":"****SANITIZED****","i":-1,"f":-1.0,"e":-1.0,"b":false,"n":null}"#
    );
}

#[test]
fn a_value_of_the_same_type_replaces_and_another_type_falls_back_to_the_mask() {
    let json = r#"{"s":"secret","i":42,"b":true}"#;
    let rules = vec![
        mask_with(&["s"], serde_json::json!("REDACTED")),
        mask_with(&["i"], serde_json::json!(0)),
        mask_with(&["b"], serde_json::json!("no")),
    ];
    assert_eq!(run(rules, json), r#"{"s":"REDACTED","i":0,"b":false}"#);
}

#[test]
fn wildcards_reach_every_key_and_every_list_item() {
    let json = r#"{"headers":{"a":"x","b":"y"},"users":[{"name":"ann","id":1},{"name":"bob"},{"id":2}],"keep":"k"}"#;
    let rules = vec![mask(&["headers", "*"]), mask(&["users", "*", "name"])];
    assert_eq!(
        run(rules, json),
        r#"{"headers":{"a":"****SANITIZED****","b":"****SANITIZED****"},"users":[{"name":"****SANITIZED****","id":1},{"name":"****SANITIZED****"},{"id":2}],"keep":"k"}"#
    );
    // A decimal key picks one list item.
    assert_eq!(
        run(vec![mask(&["l", "1"])], r#"{"l":["a","b","c"]}"#),
        r#"{"l":["a","****SANITIZED****","c"]}"#
    );
}

#[test]
fn nested_paths_and_missing_paths() {
    let json = r#"{"user":{"email":"a@b.c","profile":{"phone":"123"}},"x":1}"#;
    assert_eq!(
        run(vec![mask(&["user", "profile", "phone"])], json),
        r#"{"user":{"email":"a@b.c","profile":{"phone":"****SANITIZED****"}},"x":1}"#
    );
    // Missing and through-a-scalar paths change nothing and are counted.
    let o = Obfuscator::new(vec![
        mask(&["nope"]),
        mask(&["x", "y"]),
        mask(&["user", "email"]),
    ]);
    let mut batch = vec![ev(json)];
    let report = o.apply_batch(&mut batch);
    assert_eq!(report.missing, vec![1, 1, 0]);
    assert_eq!(report.replaced, vec![0, 0, 1]);
    assert_eq!(report.changed, 1);
}

#[test]
fn events_no_rule_touches_keep_their_bytes() {
    let e = ev(r#"{"a":"1"}"#);
    let out = Obfuscator::new(vec![mask(&["b"])]).apply(&e).unwrap();
    assert_eq!(out, e);
    // Same buffer, not a copy.
    assert_eq!(out.json.as_ptr(), e.json.as_ptr());
}

#[test]
fn non_scalar_targets_are_masked_whole() {
    assert_eq!(
        run(vec![mask(&["u"])], r#"{"u":{"a":1,"b":[true]},"l":[1]}"#),
        r#"{"u":"****SANITIZED****","l":[1]}"#
    );
    // Patterns go inside instead.
    assert_eq!(
        run(
            vec![patterns(&["u"], &["tok=[a-z]+"])],
            r#"{"u":{"a":"x?tok=abc","b":["tok=zz&y",7]}}"#
        ),
        r#"{"u":{"a":"x?****SANITIZED****","b":["****SANITIZED****&y",7]}}"#
    );
}

#[test]
fn patterns_replace_only_what_they_match() {
    let json = r#"{"url":"https://host.example.com/a?token=s3cr3t&x=1","other":"https://host.example.com/"}"#;
    let rules = vec![patterns(&["url"], &["https?://[^/]+", "token=[^&]+"])];
    assert_eq!(
        run(rules, json),
        r#"{"url":"****SANITIZED****/a?****SANITIZED****&x=1","other":"https://host.example.com/"}"#
    );
    // No match: the event is unchanged. A match in a number masks the number.
    assert_eq!(
        run(vec![patterns(&["url"], &["zzz"])], r#"{"url":"abc"}"#),
        r#"{"url":"abc"}"#
    );
    assert_eq!(
        run(vec![patterns(&["n"], &["^4"])], r#"{"n":42,"m":3.5}"#),
        r#"{"n":-1,"m":3.5}"#
    );
}

#[test]
fn a_replacement_value_is_taken_literally() {
    let rule = ObfuscationRule {
        path: path(&["s"]),
        action: Action::Patterns {
            regexes: vec![regex::Regex::new("(b+)").unwrap()],
            replacement: "<$1>".into(),
        },
    };
    assert_eq!(run(vec![rule], r#"{"s":"abbc"}"#), r#"{"s":"a<$1>c"}"#);
}

#[test]
fn escaped_strings_and_keys_are_decoded_before_matching() {
    // `userName` with an escaped key and an escaped value.
    let json = r#"{"user\u004eame":"jos\u00e9","q":"a\"b"}"#;
    let out = run(vec![mask(&["userName"]), patterns(&["q"], &["\""])], json);
    assert_eq!(
        out,
        r#"{"user\u004eame":"****SANITIZED****","q":"a****SANITIZED****b"}"#
    );
}

#[test]
fn hmac_is_deterministic_keyed_and_distinguishes_inputs() {
    let rules = || vec![hmac(&["userName"], "0123456789abcdef0123456789abcdef")];
    let a1 = run(rules(), r#"{"userName":"ann@example.com","n":1}"#);
    let a2 = run(rules(), r#"{"n":2,"userName":"ann@example.com"}"#);
    let b = run(rules(), r#"{"userName":"bob@example.com","n":1}"#);
    let token = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["userName"].as_str().unwrap().to_owned()
    };
    assert_eq!(token(&a1), token(&a2));
    assert_ne!(token(&a1), token(&b));
    assert!(token(&a1).starts_with("hmac:"));
    assert_eq!(token(&a1).len(), 5 + 32);
    assert!(!a1.contains("ann"));
    // Another key gives another token.
    let other = run(
        vec![hmac(&["userName"], "another key, also long enough")],
        r#"{"userName":"ann@example.com","n":1}"#,
    );
    assert_ne!(token(&a1), token(&other));
    // The token is HMAC-SHA256 truncated to 16 bytes (RFC 4231 test case 2).
    assert_eq!(
        HmacKey::new(b"Jefe").token(b"what do ya want for nothing?"),
        "hmac:5bdcc146bf60754e6a042426089575c7"
    );
    // The key never shows in Debug.
    let rule = hmac(&["x"], "very secret key material!!");
    assert!(!format!("{rule:?}").contains("very secret"));
}

#[test]
fn hmac_of_numbers_and_objects_uses_their_json_text() {
    let k = "0123456789abcdef0123456789abcdef";
    let out = run(vec![hmac(&["id"], k)], r#"{"id":1234}"#);
    let key = HmacKey::new(k.as_bytes());
    assert_eq!(out, format!(r#"{{"id":"{}"}}"#, key.token(b"1234")));
    let out = run(vec![hmac(&["o"], k)], r#"{"o":{"a":1}}"#);
    assert_eq!(out, format!(r#"{{"o":"{}"}}"#, key.token(br#"{"a":1}"#)));
}

#[test]
fn key_order_unknown_fields_date_and_dedup_key_are_kept() {
    let json = r#"{"zeta":1,"userId":"u-1","alpha":{"k":[1,2.50,"x"]},"date":"2025-03-04T10:15:27.412+0000","unknown":1E3}"#;
    let e = ev(json);
    let out = Obfuscator::new(vec![mask(&["userId"])]).apply(&e).unwrap();
    assert_eq!(
        &out.json[..],
        br#"{"zeta":1,"userId":"****SANITIZED****","alpha":{"k":[1,2.50,"x"]},"date":"2025-03-04T10:15:27.412+0000","unknown":1E3}"#
    );
    assert_eq!(out.date_ms, e.date_ms);
    assert_eq!(out.key, e.key);
}

#[test]
fn rules_apply_in_order_to_the_previous_result() {
    let json = r#"{"user":{"name":"ann","mail":"ann@x"}}"#;
    // Masking the whole object after a nested rule: the mask wins, nothing of it is left.
    let out = run(
        vec![hmac(&["user", "name"], "0123456789abcdef"), mask(&["user"])],
        json,
    );
    assert_eq!(out, r#"{"user":"****SANITIZED****"}"#);
}

#[test]
fn a_batch_drops_what_cannot_be_obfuscated() {
    let good = ev(r#"{"a":"x"}"#);
    let bad = Event {
        date_ms: 0,
        key: [0; 32],
        json: Bytes::from_static(br#"{"a":"x"#),
    };
    let mut batch = vec![good, bad];
    let report = Obfuscator::new(vec![mask(&["a"])]).apply_batch(&mut batch);
    assert_eq!(report.failed, 1);
    assert_eq!(batch.len(), 1);
    assert_eq!(&batch[0].json[..], br#"{"a":"****SANITIZED****"}"#);
}

/// Collects the log lines emitted while `f` runs.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

/// Events from the API parser can hold strings with a lone surrogate escape (JSON's syntax
/// allows it; it decodes to no text), in values and in nested member names.
#[test]
fn a_value_a_rule_cannot_read_is_masked_whole_the_event_delivered_and_counted() {
    let rules = vec![
        hmac(&["user"], "0123456789abcdef"),
        patterns(&["url"], &["[0-9]+"]),
        mask(&["o", "name"]),
        patterns(&["list"], &["x"]),
    ];
    let obf = Obfuscator::new(rules);
    let unreadable = ev(
        r#"{"user":"\ud800ann","url":"a\udc00/1","o":{"\ud800k":1,"name":"bob"},"list":[1,"\ud800x",{"y":"x"}],"n":1}"#,
    );
    let readable = ev(r#"{"user":"ann","url":"a/1","o":{"name":"bob"},"list":["x"],"n":2}"#);
    let mut batch = vec![unreadable.clone(), readable, unreadable.clone()];
    let (report, log) = logged(|| obf.apply_batch(&mut batch));
    assert_eq!(batch.len(), 3, "an event was dropped");
    assert_eq!(report.failed, 0);
    assert_eq!(report.fallbacks, vec![2, 2, 2, 2]);
    assert_eq!(
        std::str::from_utf8(&batch[0].json).unwrap(),
        r#"{"user":"****SANITIZED****","url":"****SANITIZED****","o":"****SANITIZED****","list":[1,"****SANITIZED****",{"y":"****SANITIZED****"}],"n":1}"#
    );
    assert_eq!(batch[2].json, batch[0].json);
    assert_eq!(
        (batch[0].date_ms, batch[0].key),
        (unreadable.date_ms, unreadable.key)
    );
    let readable_out = std::str::from_utf8(&batch[1].json).unwrap();
    assert!(
        readable_out.contains(r#""o":{"name":"****SANITIZED****"}"#),
        "{readable_out}"
    );
    // One warning per rule, whatever the number of events; never a value.
    for i in 0..4 {
        let label = obf.label(i);
        let lines = log
            .lines()
            .filter(|l| l.contains(label) && l.contains("could not be read"));
        assert_eq!(lines.count(), 1, "{label}:\n{log}");
    }
    assert!(!log.contains("ann") && !log.contains("bob"), "{log}");
    let (_, again) = logged(|| obf.apply_batch(&mut vec![unreadable.clone()]));
    assert!(!again.contains("could not be read"), "{again}");
}

proptest::proptest! {
    /// No original `userName` survives, whatever it holds, and everything else is unchanged.
    /// (Each name holds a character that neither the mask, a token nor the other fields can
    /// contain, so "not in the output" is exact.)
    #[test]
    fn no_original_user_name_is_left(
        name in "\\PC{0,12}[éß🎉]\\PC{0,12}",
        other in "[a-z]{1,8}",
        use_hmac in proptest::bool::ANY,
    ) {
        let json = serde_json::json!({"userId": other, "userName": name, "n": 7}).to_string();
        let rule = if use_hmac { hmac(&["userName"], "0123456789abcdef") } else { mask(&["userName"]) };
        let out = run(vec![rule.clone()], &json);
        let escaped = serde_json::to_string(&name).unwrap();
        proptest::prop_assert!(!out.contains(name.as_str()), "{}", out);
        proptest::prop_assert!(!out.contains(&escaped[1..escaped.len() - 1]), "{}", out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let got = v["userName"].as_str().unwrap();
        if use_hmac {
            proptest::prop_assert!(got.starts_with(HMAC_PREFIX) && got.len() == 37);
        } else {
            proptest::prop_assert_eq!(got, MASK);
        }
        // The other members are untouched, in order.
        proptest::prop_assert!(out.starts_with(&format!(r#"{{"n":7,"userId":"{other}","userName":""#)), "{}", out);
        // Deterministic.
        proptest::prop_assert_eq!(run(vec![rule], &json), out);
    }

    /// Patterns on random text: no match of the pattern is left in the output.
    #[test]
    fn no_pattern_match_is_left(text in "[a-z0-9=&:/.]{0,40}") {
        let json = serde_json::json!({"url": text}).to_string();
        let out = run(vec![patterns(&["url"], &["[0-9]+"])], &json);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        proptest::prop_assert!(!v["url"].as_str().unwrap().bytes().any(|b| b.is_ascii_digit()));
    }
}

/// An event that is not JSON text (never one from `crate::event`) is never delivered in clear,
/// and never lost without a trace: it leaves the batch and comes back in `withheld`, with its
/// bytes, for the dead-letter store.
#[test]
fn an_event_that_is_not_json_text_is_withheld_with_its_bytes() {
    let o = Obfuscator::new(vec![mask(&["userName"])]);
    let good = ev(r#"{"userName":"bob","x":1}"#);
    let mut bad = good.clone();
    bad.json = Bytes::from_static(b"{\"userName\":\"b\xffb\"");
    let mut batch = vec![good, bad.clone()];
    let report = o.apply_batch(&mut batch);
    assert_eq!(batch.len(), 1);
    assert_eq!(report.failed, 1);
    assert_eq!(report.withheld.len(), 1);
    assert_eq!(report.withheld[0].0, bad);
    assert_eq!(report.withheld[0].1, "the event is not UTF-8 text");
}

/// What the serde_json path (the reference) makes of `json`: the new text (or the error), and
/// the counts.
fn via_serde(o: &Obfuscator, json: &str) -> (Result<Option<String>, String>, ObfuscationReport) {
    let mut report = ObfuscationReport::default();
    report.replaced.resize(o.rules.len(), 0);
    report.missing.resize(o.rules.len(), 0);
    report.fallbacks.resize(o.rules.len(), 0);
    let out = o.apply_serde(json, &mut report).map_err(|e| e.to_string());
    (out, report)
}

/// What the fast path makes of `json`, or `None` when it leaves the event to the serde_json
/// path.
fn via_fast(o: &Obfuscator, json: &str) -> Option<(Option<String>, ObfuscationReport)> {
    let mut report = ObfuscationReport::default();
    report.replaced.resize(o.rules.len(), 0);
    report.missing.resize(o.rules.len(), 0);
    report.fallbacks.resize(o.rules.len(), 0);
    let mut scratch = fast::Scratch::default();
    let outcome = fast::apply(&o.rules, json, &mut scratch)?;
    for (i, (found, edits)) in outcome.per_rule.iter().enumerate() {
        o.record(i, found, *edits, &mut report);
    }
    Some((outcome.json, report))
}

mod gen {
    use proptest::prelude::*;

    /// Member names: mostly ones the rules name, some with escapes (which the fast path leaves
    /// to serde_json).
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => proptest::sample::select(vec!["a", "b", "url", "user", "0", "1"]).prop_map(|k| format!("\"{k}\"")),
            1 => proptest::sample::select(vec![r#""\u0061""#, r#""\ud800""#, r#""u\"rl""#]).prop_map(str::to_owned),
        ]
    }

    /// Scalars as a vendor may write them: number forms, escapes, lone surrogates.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "null",
                "true",
                "false",
                "0",
                "-0",
                "42",
                "-7",
                "4.5",
                "1E3",
                "-2.5e-3",
                "1e+2",
                r#""""#,
                r#""secret""#,
                r#""a\"b\\c""#,
                r#""\u00e9t\u00e9""#,
                r#""\ud800x""#,
                r#""https://example.com/a?b=1""#,
                r#""x\/y\n\t""#,
                r#""ünïcødé 🎉""#,
            ])
            .prop_map(str::to_owned),
            "[a-z0-9:/.=]{0,16}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    /// A JSON value, up to three levels of objects and lists.
    pub(super) fn value() -> impl Strategy<Value = String> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec((key(), inner.clone()), 0..4).prop_map(|m| object(&m)),
                proptest::collection::vec(inner, 0..4)
                    .prop_map(|items| format!("[{}]", items.join(","))),
            ]
        })
    }

    pub(super) fn object(members: &[(String, String)]) -> String {
        let members: Vec<String> = members.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!("{{{}}}", members.join(","))
    }

    /// An event: an object of members (names may repeat).
    pub(super) fn event() -> impl Strategy<Value = String> {
        proptest::collection::vec((key(), value()), 0..6).prop_map(|m| object(&m))
    }

    /// A rule set of one to four rules over the same names, every action.
    pub(super) fn rules() -> impl Strategy<Value = Vec<super::ObfuscationRule>> {
        let segment = proptest::sample::select(vec!["a", "b", "url", "user", "0", "1", "*"]);
        let path = proptest::collection::vec(segment, 1..4);
        let rule = (path, 0..6u8).prop_map(|(p, action)| match action {
            0 => super::mask(&p),
            1 => super::mask_with(&p, serde_json::json!("X\"")),
            2 => super::mask_with(&p, serde_json::json!(0)),
            3 => super::hmac(&p, "k"),
            4 => super::patterns(&p, &["[0-9]+"]),
            _ => super::patterns(&p, &["a", "e+"]),
        });
        proptest::collection::vec(rule, 1..5)
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// The fast path and the serde_json path give the same bytes and the same counts, for
    /// random events and rule sets; where the fast path gives up, the serde_json path decides.
    #[test]
    fn fast_path_agrees_with_serde_path(event in gen::event(), rules in gen::rules()) {
        let o = Obfuscator::new(rules);
        let (reference, reference_report) = via_serde(&o, &event);
        if let Some((json, report)) = via_fast(&o, &event) {
            proptest::prop_assert_eq!(Ok(json), reference, "{}", event);
            proptest::prop_assert_eq!(report, reference_report, "{}", event);
        }
    }

    /// The fast path is never laxer than serde_json: on an event with one byte cut out or put
    /// in, whatever it accepts, the serde_json path accepts and obfuscates the same way.
    #[test]
    fn fast_path_accepts_no_broken_json(
        event in gen::event(),
        rules in gen::rules(),
        at in proptest::prelude::any::<proptest::sample::Index>(),
        byte in proptest::sample::select(b"{}[]:,\"\\ 0-.eE+tfnu\n\t\x01".to_vec()),
        cut in proptest::bool::ANY,
    ) {
        let mut bytes = event.into_bytes();
        let at = at.index(bytes.len() + 1);
        if cut && at < bytes.len() {
            bytes.remove(at);
        } else {
            bytes.insert(at, byte);
        }
        let Ok(event) = String::from_utf8(bytes) else { return Ok(()); };
        let o = Obfuscator::new(rules);
        if let Some((json, report)) = via_fast(&o, &event) {
            let (reference, reference_report) = via_serde(&o, &event);
            proptest::prop_assert_eq!(Ok(json), reference, "{}", event);
            proptest::prop_assert_eq!(report, reference_report, "{}", event);
        }
    }
}

/// The simulator's events (the shape the vendor sends) take the fast path for the bench's
/// rule set, and give what the serde_json path gives.
#[test]
fn vendor_shaped_events_take_the_fast_path() {
    let json = r#"{"date":"2024-05-01T10:00:00.000Z","userId":"u-17","userName":"ann@example.com","url":"https://example.com/a/b?c=1","classification":"news","nested":{"list":[1,2.5,"x"]}}"#;
    let o = Obfuscator::new(vec![
        mask(&["userId"]),
        hmac(&["userName"], "0123456789abcdef"),
        patterns(&["url"], &["https?://[^/]+"]),
    ]);
    let (fast_json, fast_report) = via_fast(&o, json).expect("the fast path reads it");
    let (reference, reference_report) = via_serde(&o, json);
    assert_eq!(Ok(fast_json), reference);
    assert_eq!(fast_report, reference_report);
}
