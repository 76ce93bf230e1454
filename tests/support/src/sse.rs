//! Server-Sent Events as a client reads them: frames split on blank lines, comments
//! (heartbeats) skipped, `id`, `event` and `data` fields.

use std::time::Instant;

use serde_json::Value;

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The `id:` field (0 when absent).
    pub id: i64,
    /// The `event:` field (`message` when absent, as EventSource names it).
    pub event: String,
    /// The `data:` lines joined by newlines, parsed as JSON (`Null` when not JSON).
    pub data: Value,
}

/// An incremental reader: push bytes as they arrive, take whole frames out.
#[derive(Default)]
pub struct Frames {
    buffer: String,
}

impl Frames {
    /// Adds `bytes` and returns the frames they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut frames = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let raw: String = self.buffer.drain(..end + 2).collect();
            frames.extend(parse(&raw));
        }
        frames
    }

    /// All frames of a whole stream's text.
    pub fn parse_all(text: &str) -> Vec<Frame> {
        let mut frames = Frames::default();
        let mut all = frames.push(text.as_bytes());
        all.extend(frames.push(b"\n\n"));
        all
    }
}

/// Reads `res` frame by frame as it arrives, calling `each(when it arrived, frame)`, until
/// `each` returns true (then true) or the stream ends or breaks (then false).
pub async fn read_until(
    res: &mut reqwest::Response,
    mut each: impl FnMut(Instant, &Frame) -> bool,
) -> bool {
    let mut frames = Frames::default();
    while let Ok(Some(chunk)) = res.chunk().await {
        let now = Instant::now();
        if frames.push(&chunk).iter().any(|frame| each(now, frame)) {
            return true;
        }
    }
    false
}

fn parse(raw: &str) -> Option<Frame> {
    let (mut id, mut event, mut data) = (0, String::from("message"), Vec::new());
    let mut any = false;
    for line in raw.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.trim().parse().unwrap_or(0),
            "event" => event = value.to_string(),
            "data" => data.push(value),
            _ => continue,
        }
        any = true;
    }
    any.then(|| Frame {
        id,
        event,
        data: serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_and_heartbeats_are_skipped() {
        let mut frames = Frames::default();
        assert!(frames.push(b": heartbeat\n\nid: 3\nevent: tok").is_empty());
        let got = frames.push(b"en\ndata: {\"delta\":\"a\"}\n\n");
        assert_eq!(
            got,
            vec![Frame {
                id: 3,
                event: "token".into(),
                data: serde_json::json!({ "delta": "a" })
            }]
        );
    }
}
