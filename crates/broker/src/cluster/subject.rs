//! MQTT topics as NATS subjects, reversibly. A topic level may hold any UTF-8, including what
//! NATS gives a meaning to (`.` separates tokens, `*` and `>` are wildcards, whitespace ends a
//! subject) and an empty level, which NATS has no token for. Each level becomes one token:
//! letters, digits and `-` as they are, every other byte `_` and two hex digits, and an empty
//! level the token `_`. Decoding is the exact inverse, so a node rebuilds the topic it was sent.

/// Bytes kept as they are in a token.
fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

/// `prefix.<level>.<level>...` for `topic`.
pub fn encode(prefix: &str, topic: &str) -> String {
    let mut subject = String::with_capacity(prefix.len() + topic.len() + 8);
    subject.push_str(prefix);
    for level in topic.split('/') {
        push_level(&mut subject, level);
    }
    subject
}

fn push_level(subject: &mut String, level: &str) {
    subject.push('.');
    if level.is_empty() {
        subject.push('_');
        return;
    }
    for &byte in level.as_bytes() {
        if plain(byte) {
            subject.push(byte as char);
        } else {
            subject.push('_');
            subject.push_str(&format!("{byte:02X}"));
        }
    }
}

/// The subjects under `prefix` of the topics an MQTT `filter` matches: `+` is one token, and
/// `#` the rest including none (`a/#` is `a` and `a.>`), so no two of them overlap.
pub fn filters(prefix: &str, filter: &str) -> Vec<String> {
    let mut subject = prefix.to_string();
    for level in filter.split('/') {
        match level {
            "#" if subject == prefix => return vec![format!("{prefix}.>")],
            "#" => return vec![format!("{subject}.>"), subject],
            "+" => subject.push_str(".*"),
            level => push_level(&mut subject, level),
        }
    }
    vec![subject]
}

/// The topic `subject` stands for, or `None` if it is not one `encode` made under `prefix`.
pub fn decode(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let mut levels = Vec::new();
    for token in rest.split('.') {
        if token == "_" {
            levels.push(String::new());
            continue;
        }
        let bytes = token.as_bytes();
        let mut level = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'_' => {
                    let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                    level.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                }
                byte if plain(byte) => {
                    level.push(byte);
                    i += 1;
                }
                _ => return None,
            }
        }
        if level.is_empty() {
            return None;
        }
        levels.push(String::from_utf8(level).ok()?);
    }
    Some(levels.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_level_comes_back() {
        let topics = [
            "owntracks/jane/phone",
            "a.b/c*d/e>f",
            "with space/and\ttab",
            "/leading/and/trailing/",
            "//",
            "",
            "ünïcödé/日本/🙂",
            "_under_score_/-dash-",
            "$share-like/$SYS/x",
        ];
        for topic in topics {
            let subject = encode("cauldron.msg", topic);
            assert!(
                subject.split('.').all(|t| !t.is_empty() && !t.contains(['*', '>', ' ', '\t'])),
                "{topic:?} -> {subject:?} has a token NATS would read otherwise"
            );
            assert_eq!(decode("cauldron.msg", &subject).as_deref(), Some(topic), "{subject}");
        }
        assert_eq!(encode("p", "a.b/c"), "p.a_2Eb.c");
        assert_eq!(encode("p", "/x"), "p._.x");
    }

    #[test]
    fn filters_become_subjects_that_match_the_same_topics() {
        assert_eq!(filters("p", "#"), ["p.>"]);
        assert_eq!(filters("p", "a/#"), ["p.a.>", "p.a"]);
        assert_eq!(filters("p", "a/+/b.c"), ["p.a.*.b_2Ec"]);
        assert_eq!(filters("p", "+"), ["p.*"]);
        assert_eq!(filters("p", "/x"), ["p._.x"]);
    }

    #[test]
    fn subjects_not_made_here_are_refused() {
        assert_eq!(decode("cauldron.msg", "other.a"), None);
        assert_eq!(decode("cauldron.msg", "cauldron.msg.a_Z9"), None);
        assert_eq!(decode("cauldron.msg", "cauldron.msg.a*"), None);
        assert_eq!(decode("cauldron.msg", "cauldron.msg.a_F"), None);
    }

    /// Every byte string that is UTF-8, as levels joined: a brute sweep over short ones.
    #[test]
    fn all_short_ascii_topics_round_trip() {
        let alphabet = ["", "a", ".", "*", ">", " ", "_", "/", "-", "é"];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let topic = format!("{a}{b}{c}");
                    assert_eq!(decode("x", &encode("x", &topic)).as_deref(), Some(topic.as_str()));
                }
            }
        }
    }
}
