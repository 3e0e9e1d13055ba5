//! Readiness: what `/ready` reports. It is fed by the same call sites as the families: a
//! service is ready once its setup passed, an output once its last delivery was confirmed (or
//! before any), and with Redis persistence while Redis answers and some replica pulls each
//! service.

use axum::http::StatusCode;

use super::{lock, Metrics, ServiceId, ServiceMetrics};

impl Metrics {
    /// Whether the persistence answered (`Ok`) or why not.
    pub fn persistence(&self, result: Result<(), String>) {
        self.persistence_up.set(i64::from(result.is_ok()));
        lock(&self.readiness).persistence = result.err();
    }

    /// The (input id, service) pairs whose lease this process holds and those it stands by
    /// for, or `None` without leases.
    pub fn leases(&self) -> Option<(Vec<ServiceId>, Vec<ServiceId>)> {
        let r = lock(&self.readiness);
        let leases = r.leases.as_ref()?;
        let pick = |held: bool| {
            leases
                .iter()
                .filter(|(_, &h)| h == held)
                .map(|(s, _)| s.clone())
                .collect()
        };
        Some((pick(true), pick(false)))
    }

    /// What is not ready, one line each; empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let r = lock(&self.readiness);
        let mut problems = Vec::new();
        if let Some(why) = &r.persistence {
            problems.push(format!("persistence: {why}"));
        }
        for ((input, service), why) in &r.services {
            if let Some(why) = why {
                problems.push(format!("input {input} service {service}: {why}"));
            }
        }
        for ((input, service), why) in &r.unpulled {
            problems.push(format!("input {input} service {service}: {why}"));
        }
        for (((input, service), output), why) in &r.outputs {
            if let Some(why) = why {
                problems.push(format!(
                    "output {output} (input {input} service {service}): last delivery failed: {why}"
                ));
            }
        }
        problems
    }
}

impl ServiceMetrics {
    /// The setup check's result.
    pub fn setup(&self, result: Result<(), String>) {
        let failure = result.as_ref().err().cloned();
        self.metrics
            .recent(self.id(), |r| r.setup_failure = failure);
        let why = result.err().map(|e| format!("setup has not passed: {e}"));
        lock(&self.metrics.readiness)
            .services
            .insert(self.id(), why);
    }
}

/// `/ready`'s status and JSON body; with leases, which services this process holds and which it
/// stands by for, each as `<input id>/<service>` (standing by is not a problem: the other
/// replica pulls them).
pub(super) fn ready_body(metrics: &Metrics) -> (StatusCode, serde_json::Value) {
    let problems = metrics.not_ready();
    let (status, mut body) = if problems.is_empty() {
        (StatusCode::OK, serde_json::json!({"ready": true}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "not_ready": problems}),
        )
    };
    if let Some((held, standby)) = metrics.leases() {
        let names = |s: Vec<ServiceId>| {
            s.iter()
                .map(|(input, service)| format!("{input}/{service}"))
                .collect::<Vec<_>>()
        };
        body["leases"] = serde_json::json!({"held": names(held), "standby": names(standby)});
    }
    if let Some((live, fair_share)) = lock(&metrics.readiness).replicas {
        body["replicas"] = serde_json::json!({"live": live, "fair_share": fair_share});
    }
    (status, body)
}
