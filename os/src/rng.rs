//! splitmix64, the one pseudo-random generator of the project: small, fast,
//! and good enough to pick interleavings, faults, workloads and backoff
//! jitter. It is only ever seeded from a seed, so every run it drives can be
//! replayed.

/// A splitmix64 generator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state starts at `state`.
    pub fn new(state: u64) -> SplitMix64 {
        SplitMix64(state)
    }

    /// The next number of the sequence, uniform over `u64`.
    ///
    /// ```
    /// use forkd_os::rng::SplitMix64;
    ///
    /// let (mut a, mut b) = (SplitMix64::new(42), SplitMix64::new(42));
    /// assert_eq!(a.next_u64(), b.next_u64());
    /// assert_ne!(a.next_u64(), SplitMix64::new(43).next_u64());
    /// ```
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0 or 1).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// FNV-1a, 64 bits: the one hash of the project, for a run's trace and for
/// deriving a part's seed from its label. Not for anything an adversary
/// chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Hashes `bytes` into the state.
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}
