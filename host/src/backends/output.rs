//! Capped output: every backend keeps at most `output_limit_bytes` of a host's stdout and of its stderr, counts
//! the rest and says so with a visible marker, so that a chatty command can fill neither memory nor a pipe.

/// Collects one output stream up to a limit.
#[derive(Debug)]
pub struct Capped {
    kept: Vec<u8>,
    dropped: u64,
    limit: usize,
}

impl Capped {
    pub fn new(limit: usize) -> Capped {
        Capped { kept: Vec::new(), dropped: 0, limit }
    }

    /// Appends a chunk, keeping what fits.
    pub fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len()).min(chunk.len());
        self.kept.extend_from_slice(&chunk[..room]);
        self.dropped += (chunk.len() - room) as u64;
    }

    /// The text (invalid UTF-8 replaced), with `[output cut: N more bytes]` on a line of its own when cut.
    pub fn finish(self) -> String {
        with_marker(String::from_utf8_lossy(&self.kept).into_owned(), self.dropped)
    }
}

/// Appends the cut marker to text of which `cut` more bytes were dropped (also for text a tool cut already).
pub fn with_marker(mut text: String, cut: u64) -> String {
    if cut > 0 {
        text.push_str(&format!("\n[output cut: {cut} more bytes]"));
    }
    text
}

/// Caps a whole text that arrived at once (a tool's JSON answer).
pub fn cap(text: &str, limit: usize) -> String {
    let mut capped = Capped::new(limit);
    capped.push(text.as_bytes());
    capped.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_counts_the_rest() {
        let mut c = Capped::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        assert_eq!(c.finish(), "abcde\n[output cut: 3 more bytes]");
        assert_eq!(cap("short", 10), "short");
    }
}
