//! `mosquitto_sub`'s output: the payload, `-v` (topic and payload), and `-F` format strings.

use std::fmt::Write;

use cauldron_client::proto::Publish;

/// The line(s) `mosquitto_sub` would print for `message`.
pub fn render(message: &Publish, verbose: bool, format: Option<&str>) -> Vec<u8> {
    match format {
        Some(format) => formatted(message, format).into_bytes(),
        None if verbose => {
            let mut out = format!("{} ", message.topic).into_bytes();
            out.extend_from_slice(&message.payload);
            out
        }
        None => message.payload.to_vec(),
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = if upper { write!(out, "{b:02X}") } else { write!(out, "{b:02x}") };
        out
    })
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn now() -> std::time::Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}

/// UTC `YYYY-MM-DDTHH:MM:SS` for a Unix time (days-to-civil conversion, proleptic Gregorian).
fn iso8601(unix_secs: u64) -> String {
    let (days, secs) = ((unix_secs / 86_400) as i64, unix_secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `%j`: the message as JSON, like mosquitto_sub (payload as a string when it is UTF-8).
fn json(message: &Publish) -> String {
    let now = now();
    let payload = match std::str::from_utf8(&message.payload) {
        Ok(text) => json_string(text),
        Err(_) => json_string(&hex(&message.payload, false)),
    };
    format!(
        "{{\"tst\":\"{}.{:06}Z+0000\",\"topic\":{},\"qos\":{},\"retain\":{},\"payloadlen\":{},\"payload\":{}}}",
        iso8601(now.as_secs()),
        now.subsec_micros(),
        json_string(&message.topic),
        message.qos as u8,
        u8::from(message.retain),
        message.payload.len(),
        payload
    )
}

/// `-F`: `%t` topic, `%p` payload, `%q` QoS, `%r` retain, `%l` payload length, `%m` packet id,
/// `%x`/`%X` payload in hex, `%j` JSON, `%U` Unix time, `%I` ISO-8601 time, `%%`; the MQTT 5
/// properties `%A` topic alias, `%C` content type, `%D` correlation data, `%E` message expiry,
/// `%F` payload format, `%P` user properties (`k:v`, space-separated), `%R` response topic, `%S`
/// subscription identifier (empty when absent); `\n`, `\t`, `\\` escapes.
fn formatted(message: &Publish, format: &str) -> String {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => match chars.next() {
                Some('t') => out.push_str(&message.topic),
                Some('p') => out.push_str(&String::from_utf8_lossy(&message.payload)),
                Some('q') => out.push_str(&(message.qos as u8).to_string()),
                Some('r') => out.push_str(if message.retain { "1" } else { "0" }),
                Some('l') => out.push_str(&message.payload.len().to_string()),
                Some('m') => out.push_str(&message.packet_id.unwrap_or(0).to_string()),
                Some('x') => out.push_str(&hex(&message.payload, false)),
                Some('X') => out.push_str(&hex(&message.payload, true)),
                Some('j') => out.push_str(&json(message)),
                Some('U') => {
                    let now = now();
                    let _ = write!(out, "{}.{:09}", now.as_secs(), now.subsec_nanos());
                }
                Some('I') => {
                    let _ = write!(out, "{}+0000", iso8601(now().as_secs()));
                }
                Some('%') => out.push('%'),
                Some(p @ ('A' | 'C' | 'D' | 'E' | 'F' | 'P' | 'R' | 'S')) => property(&mut out, message, p),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            },
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// An MQTT 5 property of the message, as mosquitto_sub prints it; nothing when absent.
fn property(out: &mut String, message: &Publish, which: char) {
    let p = &message.properties;
    let number = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
    let text = match which {
        'A' => number(p.topic_alias.map(u32::from)),
        'C' => p.content_type.as_deref().unwrap_or_default().to_string(),
        'D' => {
            p.correlation_data.as_ref().map(|d| String::from_utf8_lossy(d).into_owned()).unwrap_or_default()
        }
        'E' => number(p.message_expiry_interval),
        'F' => number(p.payload_format_indicator.map(u32::from)),
        'P' => p.user_properties.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" "),
        'R' => p.response_topic.as_deref().unwrap_or_default().to_string(),
        _ => number(p.subscription_identifiers.first().copied()),
    };
    out.push_str(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Publish {
        let mut publish = Publish::new("a/b", &b"hi \"there\""[..]);
        publish.retain = true;
        publish
    }

    #[test]
    fn formats_like_mosquitto_sub() {
        assert_eq!(render(&message(), false, None), b"hi \"there\"");
        assert_eq!(render(&message(), true, None), b"a/b hi \"there\"");
        assert_eq!(
            render(&message(), false, Some("%t|%q|%r|%l|%x\\t%%")),
            b"a/b|0|1|10|68692022746865726522\t%"
        );
        let json = String::from_utf8(render(&message(), false, Some("%j"))).unwrap();
        assert!(json.starts_with("{\"tst\":\"20"), "{json}");
        assert!(
            json.contains(
                "\"topic\":\"a/b\",\"qos\":0,\"retain\":1,\"payloadlen\":10,\"payload\":\"hi \\\"there\\\"\""
            ),
            "{json}"
        );
    }

    #[test]
    fn converts_unix_time_to_utc_calendar_time() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(iso8601(1_795_709_025), "2026-11-26T16:03:45");
    }
}
