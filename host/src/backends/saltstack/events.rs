//! Parsing salt-api's `/events` stream (server-sent events). salt-api writes each bus event as a `tag:` line and
//! a `data:` line (JSON `{"tag", "data"}`) followed by a blank line, and opens the stream with `retry: 400`, which
//! it sends only once its listener is connected to the master's event bus: events published after that line
//! are never missed.

/// One event as salt-api framed it: its tag and the raw `data` text (JSON, parsed only for the tags we want).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub tag: String,
    pub data: String,
}

/// Incremental parser: feed it the chunks as they arrive, in any split.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    tag: String,
    data: Option<String>,
    ready: bool,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Whether the stream's opening `retry:` line has been seen, i.e. salt-api listens to the bus.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Consumes a chunk and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line = if self.partial.is_empty() {
                self.line(&rest[..end])
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                let whole = std::mem::take(&mut self.partial);
                self.line(&whole)
            };
            events.extend(line);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        events
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(SseEvent { tag: std::mem::take(&mut self.tag), data });
        }
        if line.starts_with(b":") {
            return None; // a comment (keep-alive)
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*text, ""),
        };
        match field {
            "retry" => self.ready = true,
            // `event` is the standard name; salt-api says `tag`.
            "tag" | "event" => self.tag = value.to_owned(),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "retry: 400\ntag: salt/job/1/new\ndata: {\"tag\": \"salt/job/1/new\", \"data\": {}}\n\n\
        : keep-alive\n\ntag: salt/job/1/ret/m1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent { tag: "salt/job/1/new".into(), data: r#"{"tag": "salt/job/1/new", "data": {}}"#.into() },
            SseEvent { tag: "salt/job/1/ret/m1".into(), data: "{\"a\":\n1}".into() },
        ]
    }

    #[test]
    fn parses_salt_api_framing_whole() {
        let mut parser = SseParser::new();
        assert!(!parser.is_ready());
        assert_eq!(parser.push(STREAM.as_bytes()), expected());
        assert!(parser.is_ready());
    }

    #[test]
    fn parses_the_same_in_any_split() {
        let bytes = STREAM.as_bytes();
        for size in 1..bytes.len() {
            let mut parser = SseParser::new();
            let events: Vec<SseEvent> = bytes.chunks(size).flat_map(|c| parser.push(c)).collect();
            assert_eq!(events, expected(), "chunks of {size}");
        }
    }

    #[test]
    fn not_ready_before_the_retry_line_and_no_event_without_data() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"tag: x\n\n").is_empty(), "a tag without data is no event");
        assert!(!parser.is_ready());
        parser.push(b"retr");
        assert!(!parser.is_ready(), "half a line does not count");
        parser.push(b"y: 400\n");
        assert!(parser.is_ready());
    }
}
