//! Figures, their targets, and the two outputs: a table for people and
//! `report.json` for tools.
//!
//! A figure is either quantiles of samples (p50, p99) or one value (a
//! throughput, a memory size). A peer figure is the same measurement of
//! one of the peers, supervisord or PM2, in the same run; the ratio is
//! forkd's over the peer's, of the p50 or of the value, so below 1 means
//! forkd is smaller (faster, for times; leaner, for memory) and above 1
//! means forkd does more (for throughputs).

use serde_json::{json, Value};

use super::stats::Quantiles;

/// What was measured.
#[derive(Clone, Copy, Debug)]
pub enum Stat {
    Q(Quantiles),
    Value { value: f64, runs: usize },
}

impl Stat {
    /// The p50, or the value: what the ratio compares.
    pub fn main(&self) -> f64 {
        match self {
            Stat::Q(q) => q.p50,
            Stat::Value { value, .. } => *value,
        }
    }

    /// Rounded to one decimal, or three for a ratio (`x`).
    fn json(&self, unit: &str) -> Value {
        let round = |x: f64| {
            let scale = if unit == "x" { 1000.0 } else { 10.0 };
            (x * scale).round() / scale
        };
        match self {
            Stat::Q(q) => json!({ "p50": round(q.p50), "p99": round(q.p99), "runs": q.n }),
            Stat::Value { value, runs } => json!({ "value": round(*value), "runs": runs }),
        }
    }
}

/// Which number of a figure a target bounds.
#[derive(Clone, Copy, Debug)]
pub enum Of {
    P50,
    P99,
    Value,
}

/// Which side of its limit a target wants a number on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Strictly below.
    Below,
    /// Below or equal.
    AtMost,
    /// Equal or above.
    AtLeast,
}

/// A goal for a figure: an upper bound (`below`, `at_most`) or a lower one.
#[derive(Clone, Debug)]
pub struct Target {
    pub of: Of,
    pub bound: Bound,
    pub limit: f64,
    /// How the goal reads, e.g. `p99 < 50 µs`.
    pub text: String,
}

impl Target {
    pub fn below(of: Of, limit: f64, text: impl Into<String>) -> Target {
        Target { of, bound: Bound::Below, limit, text: text.into() }
    }

    pub fn at_most(of: Of, limit: f64, text: impl Into<String>) -> Target {
        Target { of, bound: Bound::AtMost, limit, text: text.into() }
    }

    pub fn at_least(of: Of, limit: f64, text: impl Into<String>) -> Target {
        Target { of, bound: Bound::AtLeast, limit, text: text.into() }
    }

    fn met(&self, stat: &Stat) -> bool {
        let x = match (self.of, stat) {
            (Of::P50, Stat::Q(q)) => q.p50,
            (Of::P99, Stat::Q(q)) => q.p99,
            (Of::Value, Stat::Value { value, .. }) => *value,
            // A target on a number the figure does not have: a bug here.
            (_, s) => s.main(),
        };
        match self.bound {
            Bound::Below => x < self.limit,
            Bound::AtMost => x <= self.limit,
            Bound::AtLeast => x >= self.limit,
        }
    }
}

/// The peers, in the order of their columns.
pub const PEERS: [&str; 2] = ["supervisord", "pm2"];

/// A peer's side of a figure.
#[derive(Clone, Debug)]
pub enum Peer {
    /// The figure has no counterpart.
    None,
    /// The peer was not measured, and why.
    Skipped(String),
    Measured(Stat),
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Dotted, e.g. `rpc.latency.ndjson`.
    pub name: String,
    /// Where the processes ran, e.g. `daemon+client cpu0`.
    pub placement: String,
    pub unit: &'static str,
    pub stat: Stat,
    /// supervisord's and PM2's sides, in the order of [`PEERS`].
    pub peers: [Peer; 2],
    pub targets: Vec<Target>,
    /// What a reader should know to read the number.
    pub note: Option<String>,
}

impl Figure {
    pub fn new(name: impl Into<String>, placement: impl Into<String>, unit: &'static str, stat: Stat) -> Figure {
        Figure {
            name: name.into(),
            placement: placement.into(),
            unit,
            stat,
            peers: [Peer::None, Peer::None],
            targets: Vec::new(),
            note: None,
        }
    }

    pub fn target(mut self, t: Target) -> Figure {
        self.targets.push(t);
        self
    }

    /// supervisord's side.
    pub fn peer(mut self, peer: Peer) -> Figure {
        self.peers[0] = peer;
        self
    }

    /// PM2's side.
    pub fn pm2(mut self, peer: Peer) -> Figure {
        self.peers[1] = peer;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }

    /// forkd's over the `i`th peer's, when that was measured.
    pub fn ratio(&self, i: usize) -> Option<f64> {
        match &self.peers[i] {
            Peer::Measured(p) if p.main() != 0.0 => Some(self.stat.main() / p.main()),
            _ => None,
        }
    }

    /// `None` without targets.
    pub fn met(&self) -> Option<bool> {
        (!self.targets.is_empty()).then(|| self.targets.iter().all(|t| t.met(&self.stat)))
    }

    pub fn json(&self) -> Value {
        let mut o = json!({ "name": self.name, "unit": self.unit, "placement": self.placement });
        for (k, v) in self.stat.json(self.unit).as_object().into_iter().flatten() {
            o[k] = v.clone();
        }
        let mut peers = serde_json::Map::new();
        for (i, name) in PEERS.iter().enumerate() {
            let side = match &self.peers[i] {
                Peer::None => continue,
                Peer::Skipped(why) => json!({ "skipped": why }),
                Peer::Measured(p) => {
                    let mut side = p.json(self.unit);
                    side["ratio"] = json!(self.ratio(i).map(|r| (r * 1000.0).round() / 1000.0));
                    side
                }
            };
            peers.insert(name.to_string(), side);
        }
        if !peers.is_empty() {
            o["peers"] = Value::Object(peers);
        }
        if !self.targets.is_empty() {
            o["targets"] = Value::Array(
                self.targets.iter().map(|t| json!({ "target": t.text, "met": t.met(&self.stat) })).collect(),
            );
            o["met"] = json!(self.met());
        }
        if let Some(n) = &self.note {
            o["note"] = json!(n);
        }
        o
    }
}

/// A number in its unit's precision: µs and ms with one decimal (ms with
/// two below 10), ratios (`x`) with three, counts and sizes whole.
pub fn fmt(x: f64, unit: &str) -> String {
    match unit {
        "µs" => format!("{x:.1}"),
        "ms" if x < 10.0 => format!("{x:.2}"),
        "ms" => format!("{x:.1}"),
        "x" => format!("{x:.3}"),
        _ => format!("{x:.0}"),
    }
}

/// The human table.
pub fn table(figures: &[Figure]) -> String {
    let header = [
        "FIGURE",
        "PLACEMENT",
        "P50",
        "P99/VALUE",
        "UNIT",
        "SUPERVISORD P50/P99|VALUE",
        "RATIO",
        "PM2 P50/P99|VALUE",
        "RATIO",
        "TARGET",
        "MET",
    ];
    let rows: Vec<[String; 11]> = figures
        .iter()
        .map(|f| {
            let (p50, p99) = match f.stat {
                Stat::Q(q) => (fmt(q.p50, f.unit), fmt(q.p99, f.unit)),
                Stat::Value { value, .. } => ("-".into(), fmt(value, f.unit)),
            };
            let peer = |i: usize| match &f.peers[i] {
                Peer::None => "-".to_string(),
                Peer::Skipped(_) => "skipped".to_string(),
                Peer::Measured(Stat::Q(q)) => format!("{}/{}", fmt(q.p50, f.unit), fmt(q.p99, f.unit)),
                Peer::Measured(Stat::Value { value, .. }) => fmt(*value, f.unit),
            };
            let ratio = |i: usize| f.ratio(i).map(|r| format!("{r:.3}")).unwrap_or_else(|| "-".into());
            let target = if f.targets.is_empty() {
                "-".to_string()
            } else {
                f.targets.iter().map(|t| t.text.as_str()).collect::<Vec<_>>().join("; ")
            };
            let met = match f.met() {
                None => "-",
                Some(true) => "met",
                Some(false) => "MISSED",
            };
            [
                f.name.clone(),
                f.placement.clone(),
                p50,
                p99,
                f.unit.to_string(),
                peer(0),
                ratio(0),
                peer(1),
                ratio(1),
                target,
                met.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(String::from);
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                // Numbers right-aligned, words left-aligned.
                if (2..=3).contains(&i) || i == 6 || i == 8 {
                    format!("{}{c}", " ".repeat(pad))
                } else {
                    format!("{c}{}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::quantiles;

    fn figure() -> Figure {
        Figure::new("restart.kill9", "daemon cpu0, bench cpu1", "µs", Stat::Q(quantiles(vec![500.0, 700.0])))
            .peer(Peer::Measured(Stat::Q(quantiles(vec![10_000.0, 12_000.0]))))
            .pm2(Peer::Skipped("node not on PATH".into()))
            .target(Target::below(Of::P50, 1000.0, "p50 < 1000"))
    }

    #[test]
    fn each_peer_has_its_side_and_ratio_in_the_json() {
        let j = figure().json();
        assert_eq!(j["peers"]["supervisord"]["p50"], json!(10_000.0));
        assert_eq!(j["peers"]["supervisord"]["ratio"], json!(0.05));
        assert_eq!(j["peers"]["pm2"], json!({ "skipped": "node not on PATH" }));
        let none = Figure::new("control.pause", "daemon+client cpu0", "µs", Stat::Q(quantiles(vec![30.0]))).json();
        assert!(none.get("peers").is_none());
    }

    #[test]
    fn the_table_has_a_column_and_a_ratio_per_peer() {
        let both = figure().pm2(Peer::Measured(Stat::Q(quantiles(vec![20_000.0]))));
        let table = table(&[both]);
        let lines: Vec<&str> = table.lines().collect();
        let cells =
            |l: &str| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cells(lines[0]),
            [
                "FIGURE",
                "PLACEMENT",
                "P50",
                "P99/VALUE",
                "UNIT",
                "SUPERVISORD P50/P99|VALUE",
                "RATIO",
                "PM2 P50/P99|VALUE",
                "RATIO",
                "TARGET",
                "MET"
            ]
        );
        assert_eq!(
            cells(lines[1]),
            [
                "restart.kill9",
                "daemon cpu0, bench cpu1",
                "500.0",
                "700.0",
                "µs",
                "10000.0/12000.0",
                "0.050",
                "20000.0/20000.0",
                "0.025",
                "p50 < 1000",
                "met"
            ]
        );
    }
}
