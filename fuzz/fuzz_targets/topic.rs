//! Topic validation and matching on arbitrary strings: no panics, and a valid name always
//! matches itself as a filter and matches "#" unless it starts with '$'.
#![no_main]

use cauldron_proto::topic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: (&str, &str)| {
    let (filter, name) = data;
    let _ = topic::validate_filter(filter);
    if topic::validate_filter(filter).is_ok() && topic::parse_shared(filter).is_none() {
        let _ = topic::matches(filter, name);
    }
    if topic::validate_name(name).is_ok() {
        assert!(topic::matches(name, name));
        assert_eq!(topic::matches("#", name), !name.starts_with('$'));
    }
});
