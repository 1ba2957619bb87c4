//! The Recorder's own `.rec` files (`rec/<user>/<device>/YYYY-MM.rec`): one record a line, the
//! ISO time, a tab, the relative topic padded to 18 with spaces, a tab, the payload. Each line
//! is stored as the message it was, so a Recorder user moves with all of their history.

use super::{Entry, FileError, Parsed};
use crate::timefmt;

pub fn read(bytes: &[u8]) -> Result<Parsed, FileError> {
    let mut parsed = Parsed::default();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = || format!("line {}", i + 1);
        let mut fields = line.splitn(3, |&b| b == b'\t');
        let (Some(time), Some(reltopic), Some(payload)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(FileError::new(at(), "not a .rec line (time, tab, topic, tab, payload)"));
        };
        let time = std::str::from_utf8(time).ok().and_then(timefmt::parse_iso);
        let Some(time) = time else {
            return Err(FileError::new(at(), "the line does not start with an ISO 8601 time"));
        };
        let Ok(reltopic) = std::str::from_utf8(reltopic) else {
            return Err(FileError::new(at(), "the topic is not UTF-8"));
        };
        let reltopic = match reltopic.trim() {
            "" => "*".to_string(),
            topic => topic.to_string(),
        };
        parsed.entries.push(Entry::Message { reltopic, time, payload: payload.to_vec() });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_messages_and_a_broken_line_names_itself() {
        let file = "2024-02-02T06:44:58Z\t*                 \t{\"_type\":\"location\",\"lat\":1,\"lon\":2,\"tst\":1706856298}\n\
                    2024-02-02T06:45:00Z\tevent             \t{\"_type\":\"transition\"}\r\n\n\
                    2024-02-02T06:46:00Z\traw               \tnot json\n";
        let parsed = read(file.as_bytes()).unwrap();
        assert_eq!(parsed.entries.len(), 3);
        assert!(
            matches!(&parsed.entries[1], Entry::Message { reltopic, time: 1706856300, .. } if reltopic == "event")
        );
        let broken = format!("{file}2024-02-02 06:47:00\t*\t{{}}\n");
        assert_eq!(read(broken.as_bytes()).unwrap_err().position, "line 5");
    }
}
