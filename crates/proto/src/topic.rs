//! Topic names and topic filters [MQTT-4.7]: validation and matching. Shared by the decoder
//! (which rejects malformed names and filters) and the broker's router.

use crate::DecodeError;

/// Most levels a topic name or filter may have: 201, i.e. 200 `/` separators. The spec sets no
/// limit; this one is Mosquitto's (a name or filter beyond it is a malformed packet there too),
/// and it bounds the depth of everything that walks topics level by level: the router's trie,
/// the retained tree and their drops.
pub const MAX_LEVELS: usize = 201;

fn check_levels(topic: &str) -> Result<(), DecodeError> {
    // Levels are separators plus one; counting stops early on long input.
    match topic.bytes().filter(|b| *b == b'/').nth(MAX_LEVELS - 1) {
        Some(_) => Err(DecodeError::TooManyTopicLevels),
        None => Ok(()),
    }
}

/// Checks a topic name of a PUBLISH: non-empty, free of wildcards [MQTT-3.3.2-2] and of the
/// null character [MQTT-1.5.4-2], at most [`MAX_LEVELS`] levels. Names that reach the broker
/// by other ways than a decoded packet (HTTP, the store) go through this same check.
pub fn validate_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    // One pass over the bytes: this runs for every PUBLISH.
    let mut separators = 0;
    for b in name.bytes() {
        match b {
            b'+' | b'#' => return Err(DecodeError::WildcardInTopicName),
            0 => return Err(DecodeError::NullCharacter),
            b'/' => separators += 1,
            _ => {}
        }
    }
    match separators < MAX_LEVELS {
        true => Ok(()),
        false => Err(DecodeError::TooManyTopicLevels),
    }
}

/// Checks a topic filter: `#` only as the whole last level [MQTT-4.7.1-1], `+` only as a whole
/// level [MQTT-4.7.1-2], and a well-formed `$share/<group>/<filter>` [MQTT-4.8.2-1].
pub fn validate_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    let filter = match parse_shared(filter) {
        Some(Ok((_, inner))) => inner,
        Some(Err(e)) => return Err(e),
        None => filter,
    };
    check_levels(filter)?;
    if filter.contains('\0') {
        return Err(DecodeError::NullCharacter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(DecodeError::InvalidMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(DecodeError::InvalidSingleLevelWildcard);
        }
    }
    Ok(())
}

/// Splits `$share/<group>/<filter>` into group and filter; `None` for an ordinary filter. The
/// group must be non-empty and wildcard-free, and a filter must follow [MQTT-4.8.2-1, 4.8.2-2].
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), DecodeError>> {
    let rest = filter.strip_prefix("$share/")?;
    Some(match rest.split_once('/') {
        Some((group, inner)) if !group.is_empty() && !inner.is_empty() && !group.contains(['+', '#']) => {
            Ok((group, inner))
        }
        _ => Err(DecodeError::InvalidSharedSubscription),
    })
}

/// Whether `filter` has a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.contains(['+', '#'])
}

/// Whether a topic name matches a (non-shared) filter. A filter that starts with a wildcard does
/// not match a name starting with `$` [MQTT-4.7.2-1]; `sport/#` matches `sport` itself
/// [MQTT-4.7.1-2].
pub fn matches(filter: &str, name: &str) -> bool {
    matches_by(filter, name, |f, n| f == n)
}

/// `matches`, with `level_is(filter_level, name_level)` deciding whether a level other than
/// a wildcard matches (an ACL pattern's `%u`, say, stands for a user name).
pub fn matches_by(filter: &str, name: &str, level_is: impl Fn(&str, &str) -> bool) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut names = name.split('/');
    let mut filters = filter.split('/');
    loop {
        match (filters.next(), names.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if level_is(f, n) => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_from_the_spec_examples() {
        for ok in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "a//b",
            "$share/g/a/#",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_filter("sport/tennis#"), Err(DecodeError::InvalidMultiLevelWildcard));
        assert_eq!(validate_filter("sport/tennis/#/ranking"), Err(DecodeError::InvalidMultiLevelWildcard));
        assert_eq!(validate_filter("sport+"), Err(DecodeError::InvalidSingleLevelWildcard));
        assert_eq!(validate_filter(""), Err(DecodeError::EmptyTopic));
        assert_eq!(validate_filter("$share//a"), Err(DecodeError::InvalidSharedSubscription));
        assert_eq!(validate_filter("$share/g"), Err(DecodeError::InvalidSharedSubscription));
        assert_eq!(validate_filter("$share/g+/a"), Err(DecodeError::InvalidSharedSubscription));
    }

    #[test]
    fn more_than_200_levels_are_refused() {
        let at_limit = "/".repeat(MAX_LEVELS - 1);
        assert_eq!(validate_name(&at_limit), Ok(()));
        assert_eq!(validate_filter(&at_limit), Ok(()));
        let over = "/".repeat(MAX_LEVELS);
        assert_eq!(validate_name(&over), Err(DecodeError::TooManyTopicLevels));
        assert_eq!(validate_filter(&over), Err(DecodeError::TooManyTopicLevels));
        let huge = "/".repeat(65_535);
        assert_eq!(validate_filter(&huge), Err(DecodeError::TooManyTopicLevels));
        assert_eq!(validate_filter(&format!("$share/g/{over}")), Err(DecodeError::TooManyTopicLevels));
    }

    #[test]
    fn names_reject_wildcards() {
        assert_eq!(validate_name("a/b c/ü"), Ok(()));
        assert_eq!(validate_name("a/+"), Err(DecodeError::WildcardInTopicName));
        assert_eq!(validate_name("a/#"), Err(DecodeError::WildcardInTopicName));
        assert_eq!(validate_name(""), Err(DecodeError::EmptyTopic));
    }

    #[test]
    fn matching_follows_section_4_7() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
            ("sport/#", "sport", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/uptime", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ];
        for (filter, name, expected) in cases {
            assert_eq!(matches(filter, name), expected, "{filter} vs {name}");
        }
    }
}
