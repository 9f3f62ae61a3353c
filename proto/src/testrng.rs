//! A deterministic pseudo-random source for the property tests of this crate: the stable
//! twin of the cargo-fuzz targets, so CI exercises the same properties without nightly.

/// xorshift64* (Vigna) with a fixed seed: small, fast, reproducible.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed, non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True about once in `n` draws.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One element of `items`.
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }

    /// A string of `min..=max` characters drawn from `alphabet`.
    pub fn string(&mut self, alphabet: &str, min: usize, max: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        let len = min + self.below(max - min + 1);
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }

    /// Up to `max_parts` pieces, each a random character or a fragment from `dictionary`,
    /// so inputs get past the first byte of the grammar under test.
    pub fn input(&mut self, dictionary: &[&str], max_parts: usize) -> String {
        let mut out = String::new();
        for _ in 0..self.below(max_parts + 1) {
            match self.below(6) {
                0 => out.push(char::from(self.next_u64() as u8)),
                1 => out.push(char::from(b' ' + self.below(95) as u8)),
                _ => out.push_str(self.pick(dictionary)),
            }
        }
        out
    }
}
