//! Mosquitto ACL files, with Mosquitto's semantics: lines before the first `user` apply to
//! anonymous clients; `user <name>` starts a user's section; `topic [read|write|readwrite|deny]
//! <topic>`; `pattern ...` with `%u` and `%c` applies to everyone; deny wins over grants; once a
//! file is set, anything it does not grant is refused.

use std::collections::HashMap;
use std::path::Path;

use cauldron_proto::topic;

use crate::authz::{Authorizer, ClientInfo};
use crate::password::FileError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn grants(self, wanted: Access) -> bool {
        self == wanted || (self == Access::ReadWrite && wanted != Access::Deny)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    topic: String,
    /// `%u` / `%c` appear in the topic (patterns), decided once when the file is read.
    uses_user: bool,
    uses_client: bool,
}

impl Rule {
    fn new(access: Access, topic: &str) -> Rule {
        Rule {
            access,
            topic: topic.to_string(),
            uses_user: topic.contains("%u"),
            uses_client: topic.contains("%c"),
        }
    }

    /// Whether the rule's filter, `%u` and `%c` read as `user` and `client`, matches `name`:
    /// level by level, as [`topic::matches`], without building the substituted filter (this
    /// runs for every delivery). A placeholder without a plain value matches nothing.
    fn matches(&self, name: &str, user: Option<&str>, client: Option<&str>) -> bool {
        if !self.uses_user && !self.uses_client {
            return topic::matches(&self.topic, name);
        }
        let (user, client) = (user.unwrap_or_default(), client.unwrap_or_default());
        if (self.uses_user && user.is_empty()) || (self.uses_client && client.is_empty()) {
            return false;
        }
        topic::matches_by(&self.topic, name, |level, name| level_is(level, name, user, client))
    }
}

/// Whether the filter level `level`, with `%u` and `%c` replaced, is `name`.
fn level_is(level: &str, name: &str, user: &str, client: &str) -> bool {
    let (mut level, mut name) = (level, name);
    loop {
        let Some(at) = level.find('%') else {
            return level == name;
        };
        let value = match level.as_bytes().get(at + 1) {
            Some(b'u') => user,
            Some(b'c') => client,
            // Only %u and %c are placeholders; anything else is literal text.
            _ => {
                let Some(rest) = name.strip_prefix(&level[..=at]) else { return false };
                (level, name) = (&level[at + 1..], rest);
                continue;
            }
        };
        let Some(rest) = name.strip_prefix(&level[..at]).and_then(|n| n.strip_prefix(value)) else {
            return false;
        };
        (level, name) = (&level[at + 2..], rest);
    }
}

/// A parsed ACL file, used as the broker's [`Authorizer`].
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// `[access] <topic>`: the access word is optional (readwrite); the topic may contain spaces.
/// Words are separated by any run of blanks, as Mosquitto reads them: `topic  deny x` is a
/// deny, never a grant on the topic "deny x".
fn rule(rest: &str) -> Result<Rule, String> {
    let rest = rest.trim_start();
    let (first, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let access = match first {
        "read" => Some(Access::Read),
        "write" => Some(Access::Write),
        "readwrite" => Some(Access::ReadWrite),
        "deny" => Some(Access::Deny),
        _ => None,
    };
    let (access, topic) = match access {
        Some(access) => (access, tail.trim()),
        None => (Access::ReadWrite, rest.trim()),
    };
    if topic.is_empty() {
        return Err("missing topic".into());
    }
    topic::validate_filter(topic).map_err(|e| format!("topic {topic:?}: {e}"))?;
    Ok(Rule::new(access, topic))
}

impl AclFile {
    pub fn load(path: &Path) -> Result<AclFile, FileError> {
        FileError::load(path, AclFile::parse)
    }

    /// Parses ACL text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<AclFile, (usize, String)> {
        let mut acl = AclFile::default();
        let mut user: Option<String> = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let error = |problem: String| (i + 1, problem);
            match keyword {
                "user" if !rest.trim().is_empty() => {
                    let name = rest.trim().to_string();
                    acl.users.entry(name.clone()).or_default();
                    user = Some(name);
                }
                "topic" => {
                    let rule = rule(rest).map_err(error)?;
                    match &user {
                        Some(name) => acl.users.entry(name.clone()).or_default().push(rule),
                        None => acl.anonymous.push(rule),
                    }
                }
                "pattern" => acl.patterns.push(rule(rest).map_err(error)?),
                _ => return Err(error(format!("unknown ACL line {line:?}"))),
            }
        }
        Ok(acl)
    }

    /// Deny first, then any grant of `wanted` access, over the client's own rules (its user's
    /// section, or the anonymous lines) and the patterns. A pattern whose `%u` or `%c` would
    /// not be a single plain level (absent, or holding `/`, `+` or `#`) applies to no one.
    /// Nothing is allocated or copied: this is asked for every delivery.
    fn check(&self, client: &ClientInfo, name: &str, wanted: Access) -> bool {
        let own = match &client.username {
            Some(user) => self.users.get(&user[..]).map(Vec::as_slice).unwrap_or_default(),
            None => &self.anonymous,
        };
        let plain = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
        let username = client.username.as_deref().filter(|u| plain(u));
        let client_id = Some(&client.client_id[..]).filter(|c| plain(c));
        let rules = || own.iter().chain(&self.patterns);
        let hits = |r: &&Rule| r.matches(name, username, client_id);
        if rules().filter(|r| r.access == Access::Deny).any(|r| hits(&r)) {
            return false;
        }
        rules().filter(|r| r.access.grants(wanted)).any(|r| hits(&r))
    }
}

/// An ACL file that can be swapped while the broker runs (SIGHUP). Each check reads the file in
/// force at that moment, so a reload applies to connected clients' next messages too.
#[derive(Debug)]
pub struct ReloadableAcl {
    current: std::sync::RwLock<std::sync::Arc<AclFile>>,
}

impl ReloadableAcl {
    pub fn new(acl: AclFile) -> ReloadableAcl {
        ReloadableAcl { current: std::sync::RwLock::new(std::sync::Arc::new(acl)) }
    }

    pub fn replace(&self, acl: AclFile) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(acl);
    }

    /// The file in force, read-locked for one check (no reference count to bump per delivery).
    fn get(&self) -> std::sync::RwLockReadGuard<'_, std::sync::Arc<AclFile>> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Authorizer for ReloadableAcl {
    fn can_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        self.get().can_publish(client, topic)
    }
    fn can_subscribe(&self, client: &ClientInfo, filter: &str) -> bool {
        self.get().can_subscribe(client, filter)
    }
    fn can_receive(&self, client: &ClientInfo, topic: &str) -> bool {
        self.get().can_receive(client, topic)
    }
}

impl Authorizer for AclFile {
    fn can_publish(&self, client: &ClientInfo, topic: &str) -> bool {
        self.check(client, topic, Access::Write)
    }

    /// Every filter is granted, as Mosquitto's ACL file grants them: what the file decides is
    /// what is read, and each message is checked on delivery, so `owntracks/+/+` yields exactly
    /// the friends the file lets one read and `secret/#` yields nothing.
    fn can_subscribe(&self, _: &ClientInfo, _: &str) -> bool {
        true
    }

    fn can_receive(&self, client: &ClientInfo, topic: &str) -> bool {
        self.check(client, topic, Access::Read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: &str, user: Option<&str>) -> ClientInfo {
        ClientInfo { client_id: id.into(), username: user.map(Into::into) }
    }

    /// The OwnTracks quicksetup ACL shape (shared/reference/owntracks.md §6).
    const OWNTRACKS: &str = "\
# anonymous: nothing but a public topic
topic read public/#

user jane
topic readwrite owntracks/jane/#
topic read owntracks/+/+
topic read owntracks/+/+/event
topic read owntracks/+/+/info

user recorder
topic read owntracks/#
topic write owntracks/+/+/cmd

pattern write $SYS/broker/connection/%c/state
pattern readwrite devices/%u/#
";

    #[test]
    fn owntracks_acl() {
        let acl = AclFile::parse(OWNTRACKS).unwrap();
        let jane = client("phone", Some("jane"));
        assert!(acl.can_publish(&jane, "owntracks/jane/phone"));
        assert!(!acl.can_publish(&jane, "owntracks/bob/phone"));
        assert!(acl.can_receive(&jane, "owntracks/bob/phone"));
        assert!(acl.can_receive(&jane, "owntracks/bob/phone/event"));
        assert!(!acl.can_receive(&jane, "owntracks/bob/phone/cmd"));
        assert!(acl.can_subscribe(&jane, "secret/#"), "granted, as Mosquitto grants it; read on delivery");
        assert!(!acl.can_receive(&jane, "secret/x"));
        let recorder = client("rec", Some("recorder"));
        assert!(acl.can_receive(&recorder, "owntracks/jane/phone/waypoints"));
        assert!(acl.can_publish(&recorder, "owntracks/jane/phone/cmd"));
        assert!(!acl.can_publish(&recorder, "owntracks/jane/phone"));
        // Patterns, for everyone with a username / client id.
        assert!(acl.can_publish(&jane, "$SYS/broker/connection/phone/state"));
        assert!(!acl.can_publish(&jane, "$SYS/broker/connection/other/state"));
        assert!(acl.can_publish(&jane, "devices/jane/x"));
        // Anonymous: only the lines before the first `user`.
        let anonymous = client("anon", None);
        assert!(acl.can_receive(&anonymous, "public/news"));
        assert!(!acl.can_publish(&anonymous, "public/news"));
        assert!(!acl.can_receive(&anonymous, "devices/x/y"), "%u needs a username");
        // A user without a section has only the patterns.
        let stranger = client("s", Some("stranger"));
        assert!(!acl.can_receive(&stranger, "owntracks/jane/phone"));
    }

    #[test]
    fn deny_wins_and_wildcards_do_not_reach_dollar_topics() {
        let acl = AclFile::parse("user u\ntopic #\ntopic deny secret/#\n").unwrap();
        let u = client("c", Some("u"));
        assert!(acl.can_publish(&u, "a/b"));
        assert!(!acl.can_publish(&u, "secret/x"));
        assert!(!acl.can_receive(&u, "$SYS/broker/uptime"));
    }

    #[test]
    fn runs_of_blanks_separate_words() {
        let acl = AclFile::parse("user bob\ntopic #\ntopic  deny owntracks/bob/secret\ntopic\t\tread  a/b\n")
            .unwrap();
        let bob = client("c", Some("bob"));
        assert!(!acl.can_publish(&bob, "owntracks/bob/secret"), "the deny is kept");
        assert!(!acl.can_receive(&bob, "owntracks/bob/secret"));
        assert!(acl.can_publish(&bob, "owntracks/bob/other"));
        assert_eq!(acl.users["bob"][2].access, Access::Read);
        assert_eq!(acl.users["bob"][2].topic, "a/b");
    }

    #[test]
    fn substitution_must_be_a_plain_level() {
        let acl = AclFile::parse("pattern readwrite d/%c/#\n").unwrap();
        assert!(acl.can_publish(&client("box", None), "d/box/t"));
        assert!(!acl.can_publish(&client("a/b", None), "d/a/b/t"), "a client id with '/' matches nothing");
        assert!(!acl.can_publish(&client("+", None), "d/x/t"));
    }

    #[test]
    fn placeholders_inside_a_level_and_literal_percents() {
        let acl = AclFile::parse("pattern readwrite home/u-%u.%c/#\npattern read rate/100%/%u\n").unwrap();
        let jane = client("ph", Some("jane"));
        assert!(acl.can_publish(&jane, "home/u-jane.ph/x"));
        assert!(acl.can_publish(&jane, "home/u-jane.ph"), "# takes the parent level too");
        assert!(!acl.can_publish(&jane, "home/u-jane.p/x"));
        assert!(!acl.can_publish(&jane, "home/u-jan.ph/x"));
        assert!(!acl.can_publish(&client("ph", Some("bob")), "home/u-jane.ph/x"));
        assert!(acl.can_receive(&jane, "rate/100%/jane"));
        assert!(!acl.can_receive(&jane, "rate/100/jane"));
        assert!(level_is("%u%c", "janeph", "jane", "ph"));
        assert!(!level_is("%u%c", "janep", "jane", "ph"));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(AclFile::parse("topic read a/#\nuser\n").unwrap_err().0, 2);
        assert_eq!(AclFile::parse("topik a\n").unwrap_err().0, 1);
        assert!(AclFile::parse("topic read a/#/b\n").unwrap_err().1.contains("MQTT-4.7.1-1"));
    }
}
