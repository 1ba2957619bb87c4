//! Where an OwnTracks message came from, read off its topic the way the Recorder does: at least
//! three levels (one leading `/` allowed), the second and third being user and device.

/// The user, the device and what follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub user: String,
    pub device: String,
    /// Everything after `<root>/<user>/<device>/`, or `*` for the base topic itself.
    pub reltopic: String,
}

impl Origin {
    /// `owntracks/jane/phone` → jane, phone, `*`. Names are kept exactly as written: `Jane` and
    /// `jane` are two users, as they are in the password file and the ACL (the Recorder lowercases
    /// them for its file paths; cauldron's store needs no such folding, and folding would let one
    /// user read and overwrite another's devices).
    pub fn parse(topic: &str) -> Option<Origin> {
        let topic = topic.strip_prefix('/').unwrap_or(topic);
        let mut levels = topic.splitn(4, '/');
        let (_root, user, device) = (levels.next()?, levels.next()?, levels.next()?);
        if user.is_empty() || device.is_empty() {
            return None;
        }
        let reltopic = match levels.next() {
            None | Some("") | Some("pico") => "*".to_string(),
            Some(rest) => rest.to_string(),
        };
        Some(Origin { user: user.to_string(), device: device.to_string(), reltopic })
    }

    /// The base topic the apps publish locations on.
    pub fn base_topic(&self) -> String {
        format!("owntracks/{}/{}", self.user, self.device)
    }

    /// The health-check pseudo device: only its last position is kept, nothing is pushed live.
    pub fn is_ping(&self) -> bool {
        self.user == "ping" && self.device == "ping"
    }
}

/// Whether a user or device name can be one level of an MQTT topic: not empty, no `/`, no
/// wildcard, no null character. Names from HTTP (HTTP mode, OsmAnd) become topics the broker
/// publishes and stores, so anything else is refused before it gets there.
pub fn is_level(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_two_and_three_are_user_and_device() {
        let o = Origin::parse("owntracks/Jane/My Phone").unwrap();
        assert_eq!((o.user.as_str(), o.device.as_str(), o.reltopic.as_str()), ("Jane", "My Phone", "*"));
        let o = Origin::parse("/owntracks/jane/phone/event").unwrap();
        assert_eq!((o.user.as_str(), o.reltopic.as_str()), ("jane", "event"));
        assert_eq!(Origin::parse("owntracks/jane/phone/pico").unwrap().reltopic, "*");
        assert_eq!(Origin::parse("a/b/c/d/e").unwrap().reltopic, "d/e");
    }

    #[test]
    fn fewer_than_three_levels_are_not_owntracks() {
        assert_eq!(Origin::parse("owntracks/jane"), None);
        assert_eq!(Origin::parse("owntracks//phone"), None);
        assert_eq!(Origin::parse("temp"), None);
    }
}
