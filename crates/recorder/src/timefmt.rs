//! Times as the Recorder writes and reads them: epoch seconds in the store, ISO 8601 UTC on the
//! wire, and the `from`/`to` formats of its API.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

/// Now, in epoch seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn utc(tst: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(tst).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2024-02-02T06:38:18Z` (`isotst`, `isorcv`).
pub fn iso(tst: i64) -> String {
    utc(tst).format(&Rfc3339).unwrap_or_default()
}

/// `2024-02-02 06:38:18` (`disptst`).
pub fn display(tst: i64) -> String {
    utc(tst).format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
}

/// `2024-02`: the month a point belongs to (the Recorder's `.rec` file name).
pub fn month(tst: i64) -> String {
    utc(tst).format(format_description!("[year]-[month]")).unwrap_or_default()
}

/// Reads an API time: `%Y-%m-%dT%H:%M:%S`, `%Y-%m-%dT%H:%M`, `%Y-%m-%dT%H`, `%Y-%m-%d` or
/// `%Y-%m` (UTC; a trailing `Z` is allowed), or epoch seconds.
pub fn parse(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.len() > 7 {
        return text.parse().ok();
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let date = match date.len() {
        7 => Date::parse(&format!("{date}-01"), format_description!("[year]-[month]-[day]")).ok()?,
        _ => Date::parse(date, format_description!("[year]-[month]-[day]")).ok()?,
    };
    let time = match time {
        None => Time::MIDNIGHT,
        Some(t) => {
            let mut parts = t.splitn(3, ':').map(|p| p.parse::<u8>().ok());
            let hour = parts.next().flatten()?;
            let minute = parts.next().unwrap_or(Some(0))?;
            let second = parts.next().unwrap_or(Some(0))?;
            Time::from_hms(hour, minute, second).ok()?
        }
    };
    Some(PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp())
}

/// Reads an RFC 3339 time as files from elsewhere write it (`2019-04-06T10:12:13.123Z`,
/// `2024-01-05T09:00:00.000+01:00`): fractions dropped, any offset.
pub fn parse_iso(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text.trim(), &Rfc3339).ok().map(OffsetDateTime::unix_timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_other_programs() {
        assert_eq!(parse_iso("2024-02-02T06:38:18Z"), Some(1706855898));
        assert_eq!(parse_iso("2024-02-02T06:38:18.999Z"), Some(1706855898));
        assert_eq!(parse_iso("2024-02-02T07:38:18.000+01:00"), Some(1706855898));
        assert_eq!(parse_iso("2024-02-02 06:38:18"), None);
    }

    #[test]
    fn formats_of_the_api() {
        assert_eq!(parse("2024-02-02T06:38:18"), Some(1706855898));
        assert_eq!(parse("2024-02-02T06:38:18Z"), Some(1706855898));
        assert_eq!(parse("2024-02-02T06:38"), Some(1706855880));
        assert_eq!(parse("2024-02-02T06"), Some(1706853600));
        assert_eq!(parse("2024-02-02"), Some(1706832000));
        assert_eq!(parse("2024-02"), Some(1706745600));
        assert_eq!(parse("1706855898"), Some(1706855898));
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("2024-13-01"), None);
        assert_eq!(iso(1706855898), "2024-02-02T06:38:18Z");
        assert_eq!(display(1706855898), "2024-02-02 06:38:18");
        assert_eq!(month(1706855898), "2024-02");
    }
}
