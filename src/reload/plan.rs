//! The pure part of a reload: which tenants start, stop, restart or stay, and which `globals`
//! and `outputs` keys changed.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::Value;

pub use crate::config::Fingerprint;

/// What a reload does to each input id. Each list keeps the new configuration's order, except
/// `removed` (in id order: those are no longer in it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Valid in the new configuration and not running: start.
    pub added: Vec<String>,
    /// Running, and in the new configuration neither valid nor invalid: stop.
    pub removed: Vec<String>,
    /// Running, valid in the new configuration with another fingerprint: stop, then start.
    pub restarted: Vec<String>,
    /// Running, valid in the new configuration with the same fingerprint: not touched.
    pub unchanged: Vec<String>,
    /// Running, but its new block is invalid: keeps running on its old block (not touched).
    pub kept_old: Vec<String>,
}

/// Compares the running tenants (`running`: id -> fingerprint) with a new configuration's valid
/// inputs (`valid`, in file order) and the ids of its invalid ones (`invalid_ids`).
pub fn plan<'a>(
    running: &BTreeMap<String, Fingerprint>,
    valid: impl IntoIterator<Item = (&'a str, Fingerprint)>,
    invalid_ids: impl IntoIterator<Item = &'a str>,
) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    let mut present = BTreeSet::new();
    for (id, fingerprint) in valid {
        present.insert(id);
        let list = match running.get(id) {
            None => &mut plan.added,
            Some(old) if *old == fingerprint => &mut plan.unchanged,
            Some(_) => &mut plan.restarted,
        };
        list.push(id.to_owned());
    }
    for id in invalid_ids {
        if running.contains_key(id) && present.insert(id) {
            plan.kept_old.push(id.to_owned());
        }
    }
    plan.removed = running
        .keys()
        .filter(|id| !present.contains(id.as_str()))
        .cloned()
        .collect();
    plan
}

impl ReloadPlan {
    /// The grep-able line a reload that was applied ends with.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "Configuration reloaded: {} added, {} removed, {} restarted, {} unchanged",
            self.added.len(),
            self.removed.len(),
            self.restarted.len(),
            self.unchanged.len() + self.kept_old.len(),
        );
        if !self.kept_old.is_empty() {
            line.push_str(&format!(
                " ({} of them on its previous configuration: {})",
                self.kept_old.len(),
                self.kept_old.join(", ")
            ));
        }
        line
    }

    /// The tenants to stop: the removed and the restarted ones.
    pub fn to_stop(&self) -> impl Iterator<Item = &str> {
        self.removed
            .iter()
            .chain(&self.restarted)
            .map(String::as_str)
    }

    /// The tenants to start from the new configuration: the restarted and the added ones.
    pub fn to_start(&self) -> impl Iterator<Item = &str> {
        self.restarted.iter().chain(&self.added).map(String::as_str)
    }
}

/// The keys of a top-level `section` (`globals`, `outputs`) whose values differ between two
/// configs' trees as written ([`crate::config::Loaded::written`]), as `<section>.<key>` in key
/// order. Compared as written: `${VAR}` references unsubstituted, which within one process is
/// the same thing (its environment does not change).
pub fn changed_keys(old: &Value, new: &Value, section: &str) -> Vec<String> {
    let read = |root: &Value| -> BTreeMap<String, Value> {
        let entries = match root.get(section) {
            Some(Value::Mapping(m)) => m.clone(),
            _ => Default::default(),
        };
        entries
            .into_iter()
            .map(|(k, v)| (key_text(&k), v))
            .collect()
    };
    let (old, new) = (read(old), read(new));
    old.keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{section}.{k}"))
        .collect()
}

/// A mapping key as text (YAML allows numbers and booleans as keys too).
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        [n; 32]
    }

    fn running(tenants: &[(&str, u8)]) -> BTreeMap<String, Fingerprint> {
        tenants
            .iter()
            .map(|(id, n)| (id.to_string(), fp(*n)))
            .collect()
    }

    fn tree(text: &str) -> Value {
        crate::config::read_yaml(text).unwrap()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_input_id_is_added_removed_restarted_or_unchanged() {
        let old = running(&[("a", 1), ("b", 2), ("c", 3)]);
        let new = [("d", fp(4)), ("c", fp(9)), ("a", fp(1))];
        let plan = plan(&old, new, []);
        assert_eq!(
            plan,
            ReloadPlan {
                added: ids(&["d"]),
                removed: ids(&["b"]),
                restarted: ids(&["c"]),
                unchanged: ids(&["a"]),
                kept_old: vec![],
            }
        );
        assert_eq!(
            plan.summary(),
            "Configuration reloaded: 1 added, 1 removed, 1 restarted, 1 unchanged"
        );
        assert_eq!(plan.to_stop().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(plan.to_start().collect::<Vec<_>>(), ["c", "d"]);
    }

    #[test]
    fn the_same_configuration_touches_nothing() {
        let old = running(&[("a", 1), ("b", 2)]);
        let plan = plan(&old, [("a", fp(1)), ("b", fp(2))], []);
        assert_eq!(plan.unchanged, ids(&["a", "b"]));
        assert_eq!(plan.to_stop().count() + plan.to_start().count(), 0);
    }

    #[test]
    fn a_running_tenant_whose_new_block_is_invalid_keeps_its_old_block() {
        let old = running(&[("a", 1), ("b", 2)]);
        // "b" invalid now, "x" invalid and never running: neither starts nor stops anything.
        let plan = plan(&old, [("a", fp(1))], ["b", "x"]);
        assert_eq!(plan.kept_old, ids(&["b"]));
        assert!(plan.removed.is_empty() && plan.added.is_empty());
        assert_eq!(
            plan.summary(),
            "Configuration reloaded: 0 added, 0 removed, 0 restarted, 2 unchanged (1 of them on its previous configuration: b)"
        );
    }

    #[test]
    fn from_nothing_everything_is_added_and_to_nothing_everything_removed() {
        let none = BTreeMap::new();
        assert_eq!(
            plan(&none, [("a", fp(1)), ("b", fp(2))], []).added,
            ids(&["a", "b"])
        );
        let old = running(&[("b", 2), ("a", 1)]);
        assert_eq!(plan(&old, [], []).removed, ids(&["a", "b"]));
    }

    #[test]
    fn changed_keys_names_each_key_that_differs() {
        let old = tree(
            "globals:\n  name: x\n  debug: false\n  metrics_listen: 127.0.0.1:9000\noutputs: {}\n",
        );
        let new = tree("globals:\n  debug: true\n  name: x   # a comment changes nothing\n  memory_log_period_in_sec: 60\noutputs: {a: 1}\n");
        let (old, new) = (&old, &new);
        assert_eq!(
            changed_keys(old, new, "globals"),
            [
                "globals.debug",
                "globals.memory_log_period_in_sec",
                "globals.metrics_listen"
            ]
        );
        assert!(changed_keys(old, old, "globals").is_empty());
        assert_eq!(changed_keys(old, new, "outputs"), ["outputs.a"]);
    }

    #[test]
    fn a_nested_change_names_its_top_key() {
        let old = tree("globals:\n  persistence:\n    type: redis\n    config: {host: a}\n");
        let new = tree("globals:\n  persistence:\n    type: redis\n    config: {host: b}\n");
        assert_eq!(changed_keys(&old, &new, "globals"), ["globals.persistence"]);
    }
}
