//! A tiny mutation fuzzer for the parsers' tests: deterministic (xorshift), so a failure
//! reproduces, and dependency-free.

/// Mutants of `seed`: each has up to `max_edits` random byte changes, insertions (from
/// `alphabet`, the characters that matter to the parser) or deletions.
pub struct Mutator {
    state: u64,
    alphabet: &'static [u8],
    max_edits: u64,
}

impl Mutator {
    pub fn new(seed: u64, alphabet: &'static [u8], max_edits: u64) -> Mutator {
        Mutator {
            state: seed | 1,
            alphabet,
            max_edits,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    pub fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..(self.next() % (self.max_edits + 1)) {
            let pos = (self.next() as usize) % (bytes.len() + 1);
            match self.next() % 3 {
                0 if pos < bytes.len() => bytes[pos] = self.next() as u8,
                1 => {
                    let c = self.alphabet[(self.next() as usize) % self.alphabet.len()];
                    bytes.insert(pos, c);
                }
                _ if pos < bytes.len() => {
                    bytes.remove(pos);
                }
                _ => {}
            }
        }
        bytes
    }
}
