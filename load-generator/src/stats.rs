//! Latency samples and errors, per client while running, merged at the end.

use crate::client::CallError;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many error messages a report shows.
const ERROR_EXAMPLES: usize = 5;

/// Every measured call's latency, by tool.
#[derive(Debug, Default)]
pub struct Samples {
    by_label: BTreeMap<String, Vec<u64>>,
}

impl Samples {
    pub fn record(&mut self, label: &str, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        match self.by_label.get_mut(label) {
            Some(values) => values.push(nanos),
            None => {
                self.by_label.insert(label.to_owned(), vec![nanos]);
            }
        }
    }

    pub fn merge(&mut self, other: Samples) {
        for (label, mut values) in other.by_label {
            self.by_label.entry(label).or_default().append(&mut values);
        }
    }

    pub fn count(&self) -> u64 {
        self.by_label.values().map(|v| v.len() as u64).sum()
    }

    /// All calls together, then each tool.
    pub fn summarize(&self) -> (Latency, BTreeMap<String, Latency>) {
        let mut all: Vec<u64> = self.by_label.values().flatten().copied().collect();
        let per_label = self
            .by_label
            .iter()
            .map(|(label, values)| (label.clone(), Latency::of(&mut values.clone())))
            .collect();
        (Latency::of(&mut all), per_label)
    }
}

/// A latency distribution.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub count: u64,
    pub mean: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    fn of(nanos: &mut [u64]) -> Self {
        if nanos.is_empty() {
            return Latency::default();
        }
        nanos.sort_unstable();
        let total: u128 = nanos.iter().map(|n| u128::from(*n)).sum();
        let mean = total / nanos.len() as u128;
        Latency {
            count: nanos.len() as u64,
            mean: Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX)),
            p50: percentile(nanos, 50.0),
            p95: percentile(nanos, 95.0),
            p99: percentile(nanos, 99.0),
            max: Duration::from_nanos(nanos[nanos.len() - 1]),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "mean_ms": millis(self.mean),
            "p50_ms": millis(self.p50),
            "p95_ms": millis(self.p95),
            "p99_ms": millis(self.p99),
            "max_ms": millis(self.max),
        })
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], pct: f64) -> Duration {
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with microsecond precision.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// Errors seen, by kind, with the first few messages.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub examples: Vec<String>,
}

impl Errors {
    pub fn record(&mut self, label: &str, error: &CallError) {
        let kind = match error {
            CallError::Tool(_) => "tool error",
            CallError::Rpc(_) => "JSON-RPC error",
            CallError::Refused(_) => "refused",
            CallError::Unknown(_) => "no answer",
        };
        self.note(kind, format!("{label}: {error}"));
    }

    /// An error that is not a failed call (a malformed answer, a setup failure).
    pub fn note(&mut self, kind: &'static str, message: String) {
        self.count += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if self.examples.len() < ERROR_EXAMPLES {
            self.examples.push(message);
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += n;
        }
        for example in other.examples {
            if self.examples.len() < ERROR_EXAMPLES {
                self.examples.push(example);
            }
        }
    }
}
