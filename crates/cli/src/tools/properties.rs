//! `-D COMMAND NAME VALUE [VALUE]`: MQTT 5 properties for each packet the tools send, with
//! mosquitto_pub/sub's names and its rules on which property goes in which packet.

use anyhow::{bail, Context};
use cauldron_client::proto::{ByteString, Bytes, Properties};

/// The properties given with `-D`, per packet.
#[derive(Debug, Default)]
pub struct PacketProperties {
    pub connect: Properties,
    pub publish: Properties,
    pub subscribe: Properties,
    pub unsubscribe: Properties,
    pub disconnect: Properties,
    pub will: Properties,
}

/// Which packets may carry each property (the names mosquitto's tools use).
const ALLOWED: &[(&str, &[&str])] = &[
    ("authentication-data", &["connect"]),
    ("authentication-method", &["connect"]),
    ("content-type", &["publish", "will"]),
    ("correlation-data", &["publish", "will"]),
    ("maximum-packet-size", &["connect"]),
    ("message-expiry-interval", &["publish", "will"]),
    ("payload-format-indicator", &["publish", "will"]),
    ("reason-string", &["disconnect"]),
    ("receive-maximum", &["connect"]),
    ("request-problem-information", &["connect"]),
    ("request-response-information", &["connect"]),
    ("response-topic", &["publish", "will"]),
    ("session-expiry-interval", &["connect", "disconnect"]),
    ("subscription-identifier", &["subscribe"]),
    ("topic-alias", &["publish"]),
    ("topic-alias-maximum", &["connect"]),
    ("user-property", &["connect", "publish", "subscribe", "unsubscribe", "disconnect", "will"]),
    ("will-delay-interval", &["will"]),
];

impl PacketProperties {
    /// Reads the values of every `-D` occurrence, in order. clap hands them over flat; each
    /// occurrence is COMMAND NAME VALUE, plus a second VALUE for `user-property`.
    pub fn parse(flat: &[String]) -> anyhow::Result<PacketProperties> {
        let mut all = PacketProperties::default();
        let mut values = flat.iter().map(String::as_str);
        while let Some(command) = values.next() {
            let name = values.next().with_context(|| format!("-D {command}: no property name"))?;
            let value = values.next().with_context(|| format!("-D {command} {name}: no value"))?;
            let Some((_, packets)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
                bail!("-D: unknown property {name:?}");
            };
            if !packets.contains(&command) {
                bail!("-D: {name} property not allowed for {command}");
            }
            let properties = match command {
                "connect" => &mut all.connect,
                "publish" => &mut all.publish,
                "subscribe" => &mut all.subscribe,
                "unsubscribe" => &mut all.unsubscribe,
                "disconnect" => &mut all.disconnect,
                _ => &mut all.will,
            };
            let second = match name {
                "user-property" => Some(
                    values.next().with_context(|| format!("-D {command} user-property {value}: no value"))?,
                ),
                _ => None,
            };
            set(properties, name, value, second).with_context(|| format!("-D {command} {name} {value}"))?;
        }
        Ok(all)
    }
}

fn set(p: &mut Properties, name: &str, value: &str, second: Option<&str>) -> anyhow::Result<()> {
    let text = || ByteString::from(value);
    let bytes = || Bytes::copy_from_slice(value.as_bytes());
    let number = || value.parse::<u32>().context("not a number");
    let short = || value.parse::<u16>().context("not a number from 0 to 65535");
    let flag = || match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => bail!("expected 0 or 1"),
    };
    match name {
        "authentication-data" => p.authentication_data = Some(bytes()),
        "authentication-method" => p.authentication_method = Some(text()),
        "content-type" => p.content_type = Some(text()),
        "correlation-data" => p.correlation_data = Some(bytes()),
        "maximum-packet-size" => p.maximum_packet_size = Some(number()?),
        "message-expiry-interval" => p.message_expiry_interval = Some(number()?),
        "payload-format-indicator" => p.payload_format_indicator = Some(flag()?),
        "reason-string" => p.reason_string = Some(text()),
        "receive-maximum" => p.receive_maximum = Some(short()?),
        "request-problem-information" => p.request_problem_information = Some(flag()?),
        "request-response-information" => p.request_response_information = Some(flag()?),
        "response-topic" => p.response_topic = Some(text()),
        "session-expiry-interval" => p.session_expiry_interval = Some(number()?),
        "subscription-identifier" => match number()? {
            0 => bail!("a subscription identifier is 1 to 268435455"),
            id => p.subscription_identifiers.push(id),
        },
        "topic-alias" => p.topic_alias = Some(short()?),
        "topic-alias-maximum" => p.topic_alias_maximum = Some(short()?),
        "will-delay-interval" => p.will_delay_interval = Some(number()?),
        _ => p.user_properties.push((text(), ByteString::from(second.unwrap_or_default()))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<PacketProperties> {
        PacketProperties::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn each_packet_gets_its_own_properties() {
        let p = parse(&[
            "publish",
            "user-property",
            "k",
            "v",
            "publish",
            "content-type",
            "text/plain",
            "connect",
            "session-expiry-interval",
            "60",
            "will",
            "will-delay-interval",
            "5",
            "subscribe",
            "subscription-identifier",
            "7",
        ])
        .unwrap();
        assert_eq!(p.publish.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.publish.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.connect.session_expiry_interval, Some(60));
        assert_eq!(p.will.will_delay_interval, Some(5));
        assert_eq!(p.subscribe.subscription_identifiers, vec![7]);
    }

    #[test]
    fn mosquittos_rules_are_kept() {
        let error = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert_eq!(
            error(&["connect", "content-type", "a"]),
            "-D: content-type property not allowed for connect"
        );
        assert!(
            error(&["publish", "message-expiry-interval", "soon"]).contains("message-expiry-interval soon")
        );
        assert!(error(&["publish", "colour", "red"]).contains("unknown property"));
        assert!(error(&["publish", "user-property", "k"]).contains("no value"));
        assert!(error(&["subscribe", "subscription-identifier", "0"]).contains("subscription-identifier 0"));
    }
}
