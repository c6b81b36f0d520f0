//! Metrics of the user's own: gauges a method sets with
//! [`Ctl::set_metric`](super::Ctl::set_metric), and values a worker
//! publishes with [`Context::set_metric`](crate::worker::Context::set_metric)
//! (through its channel, labelled with its name and instance). They are
//! exposed as `forkd_user_NAME` gauges.
//!
//! Bounded: names are checked, and past [`MAX_SERIES`] series a new one
//! is refused (an existing one may still change).

use std::collections::BTreeMap;
use std::fmt::Write;

/// The most series of the user's the daemon keeps.
pub const MAX_SERIES: usize = 1000;

/// Why a user metric was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricError {
    /// The name is not 1 to 64 of `[a-zA-Z0-9_]`, starting with no digit.
    BadName(String),
    /// The value is not a finite number.
    NotFinite,
    /// [`MAX_SERIES`] series exist already.
    TooMany,
}

impl std::fmt::Display for MetricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricError::BadName(n) => {
                write!(f, "metric name {n:?}: 1 to 64 of [a-zA-Z0-9_], not starting with a digit")
            }
            MetricError::NotFinite => f.write_str("metric value: not a finite number"),
            MetricError::TooMany => write!(f, "metric: at most {MAX_SERIES} series"),
        }
    }
}

impl std::error::Error for MetricError {}

/// The user's gauges: (name, worker and instance if a worker's) -> value.
#[derive(Debug, Clone, Default)]
pub struct UserMetrics {
    series: BTreeMap<(String, Option<(String, u32)>), f64>,
}

impl UserMetrics {
    /// Sets gauge `name` (of worker instance `of`, if any) to `value`.
    pub fn set(&mut self, name: &str, of: Option<(String, u32)>, value: f64) -> Result<(), MetricError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(MetricError::BadName(name.chars().take(80).collect()));
        }
        if !value.is_finite() {
            return Err(MetricError::NotFinite);
        }
        let key = (name.to_string(), of);
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            return Err(MetricError::TooMany);
        }
        self.series.insert(key, value);
        Ok(())
    }

    /// Takes the metrics of a worker's event, `{"metrics": {NAME: NUMBER}}`;
    /// whether it was one.
    pub(crate) fn take_from_worker(&mut self, worker: &str, instance: u32, data: &serde_json::Value) -> bool {
        let Some(map) = data.get("metrics").and_then(|m| m.as_object()) else { return false };
        for (name, value) in map {
            let Some(v) = value.as_f64() else { continue };
            if let Err(e) = self.set(name, Some((worker.to_string(), instance)), v) {
                log::warn!("worker {worker}/{instance}: {e}");
            }
        }
        true
    }
}

/// Appends the user's gauges, one family per name.
pub(crate) fn render(out: &mut String, metrics: &UserMetrics) {
    let mut last: Option<&str> = None;
    for ((name, of), value) in &metrics.series {
        if last != Some(name.as_str()) {
            let _ = writeln!(out, "# HELP forkd_user_{name} Set by the daemon's own code.");
            let _ = writeln!(out, "# TYPE forkd_user_{name} gauge");
            last = Some(name);
        }
        match of {
            Some((w, i)) => {
                let w = w.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = writeln!(out, "forkd_user_{name}{{worker=\"{w}\",instance=\"{i}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "forkd_user_{name} {value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_the_bound_are_checked() {
        let mut m = UserMetrics::default();
        assert_eq!(m.set("queue_depth", None, 3.0), Ok(()));
        assert!(matches!(m.set("9lives", None, 1.0), Err(MetricError::BadName(_))));
        assert!(matches!(m.set("a-b", None, 1.0), Err(MetricError::BadName(_))));
        assert_eq!(m.set("x", None, f64::NAN), Err(MetricError::NotFinite));
        for i in 1..MAX_SERIES {
            m.set(&format!("m{i}"), None, 1.0).unwrap();
        }
        assert_eq!(m.set("one_more", None, 1.0), Err(MetricError::TooMany));
        assert_eq!(m.set("queue_depth", None, 4.0), Ok(()), "an existing series still changes");
        let mut out = String::new();
        render(&mut out, &m);
        assert!(out.contains("# TYPE forkd_user_queue_depth gauge\nforkd_user_queue_depth 4\n"), "{out}");
    }

    #[test]
    fn a_worker_s_metrics_event_sets_its_labelled_gauges() {
        let mut m = UserMetrics::default();
        let data = serde_json::json!({ "metrics": { "backlog": 7, "bad-name": 1, "label": "x" } });
        assert!(m.take_from_worker("copy", 2, &data));
        assert!(!m.take_from_worker("copy", 2, &serde_json::json!({ "other": 1 })), "not a metrics event");
        let mut out = String::new();
        render(&mut out, &m);
        assert_eq!(
            out,
            "# HELP forkd_user_backlog Set by the daemon's own code.\n# TYPE forkd_user_backlog gauge\n\
             forkd_user_backlog{worker=\"copy\",instance=\"2\"} 7\n"
        );
    }
}
