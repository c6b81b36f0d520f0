//! Quantiles of samples. Nearest rank on sorted samples: p99 of 50 samples
//! is the largest one, never an interpolation between two.

use std::time::Duration;

/// The median and the 99th percentile of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

/// The `q` quantile of sorted samples, by nearest rank.
fn rank(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
    sorted[i]
}

/// Quantiles of `samples`; at least one sample is needed.
pub fn quantiles(mut samples: Vec<f64>) -> Quantiles {
    assert!(!samples.is_empty(), "quantiles of no samples");
    samples.sort_by(f64::total_cmp);
    Quantiles { p50: rank(&samples, 0.50), p99: rank(&samples, 0.99), n: samples.len() }
}

/// The median of a few runs' values.
pub fn median(values: Vec<f64>) -> f64 {
    quantiles(values).p50
}

pub fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e3
}

pub fn millis(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let q = quantiles((1..=100).map(f64::from).collect());
        assert_eq!((q.p50, q.p99, q.n), (50.0, 99.0, 100));
        let q = quantiles(vec![3.0, 1.0, 2.0, 4.0]);
        assert_eq!((q.p50, q.p99), (2.0, 4.0));
        let q = quantiles(vec![7.0]);
        assert_eq!((q.p50, q.p99), (7.0, 7.0));
    }
}
