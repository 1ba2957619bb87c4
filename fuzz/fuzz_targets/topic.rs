//! Topic validation and matching on arbitrary strings: no panics, and a valid name always
//! matches itself as a filter and matches "#" unless it starts with '$'. `depth` adds a run of
//! up to 65,535 levels in front, so deep and long topics (the SUBSCRIBE of 65,535 `/` that once
//! overflowed the broker's stack) are explored too: nothing deeper than `MAX_LEVELS` is valid.
#![no_main]

use cauldron_proto::topic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, &str, u16)| {
    let (filter, name, depth) = data;
    let prefix = "a/".repeat(usize::from(depth));
    for (filter, name) in [(filter.to_string(), name.to_string()), (prefix.clone() + filter, prefix + name)] {
        let levels = |t: &str| t.split('/').count();
        if topic::validate_filter(&filter).is_ok() {
            assert!(levels(&filter) <= topic::MAX_LEVELS + 2, "{} levels", levels(&filter));
            if topic::parse_shared(&filter).is_none() {
                let _ = topic::matches(&filter, &name);
            }
        }
        if topic::validate_name(&name).is_ok() {
            assert!(levels(&name) <= topic::MAX_LEVELS);
            assert!(topic::matches(&name, &name));
            assert_eq!(topic::matches("#", &name), !name.starts_with('$'));
        }
    }
});
