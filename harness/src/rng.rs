//! The harness's random numbers: one master seed, every other seed derived
//! from it by name, so that adding a use of randomness in one place never
//! shifts the numbers drawn in another.
//!
//! splitmix64, as the simulated world itself uses: small, fast, and good
//! enough to pick workloads. Never seeded from anything but a seed.

use forkd_os::rng::SplitMix64;

/// A seeded generator.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed ^ 0x6A09_E667_F3BC_C909))
    }

    /// A generator for the part of a run called `label`, derived from `seed`.
    pub fn derive(seed: u64, label: &str) -> Rng {
        Rng::new(derive(seed, label))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `percent` in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`, uniformly.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// A seed for something else, drawn from this generator.
    pub fn fork(&mut self) -> u64 {
        self.next_u64()
    }
}

/// The seed of the part of a run called `label` (FNV-1a of the label, mixed
/// with the master seed).
pub fn derive(seed: u64, label: &str) -> u64 {
    let mut h = forkd_os::rng::Fnv1a::default();
    h.write(label.as_bytes());
    let mut r = Rng::new(seed ^ h.finish());
    r.next_u64()
}
