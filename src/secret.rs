//! `Secret`: a string (camera password, API token) whose `Debug` and `Display` never show it.

use std::fmt;

/// A credential. Its value is only reachable through [`Secret::expose`], so it cannot end
/// up in a log line or an error message by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The plain value, for the one place that must hand it on (rtspsrc, HTTP auth, state file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time independent of where the first difference is (for API tokens).
    pub fn constant_time_eq(&self, other: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        let mut diff = (mine.len() ^ other.len()) as u8 | u8::from(mine.len() != other.len());
        for (i, b) in other.iter().enumerate() {
            diff |= b ^ mine.get(i % mine.len().max(1)).copied().unwrap_or(0);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[test]
    fn constant_time_eq_matches_only_equal() {
        let s = Secret::new("token-123");
        assert!(s.constant_time_eq(b"token-123"));
        assert!(!s.constant_time_eq(b"token-124"));
        assert!(!s.constant_time_eq(b"token-12"));
        assert!(!s.constant_time_eq(b"token-1234"));
        assert!(!s.constant_time_eq(b""));
        assert!(Secret::new("").constant_time_eq(b""));
    }
}
