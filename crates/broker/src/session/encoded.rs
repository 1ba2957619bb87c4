//! `Encoded`: QoS 0 messages for an attached MQTT 3.x connection, queued as the very PUBLISH
//! packets the connection writes.
//!
//! A fan-out queues one message in many sessions, and each queued `Delivery` shares the
//! message's `Arc`: the publisher's core counts it up once per subscriber while the subscribers'
//! cores count it down, one cache line bouncing between them on every delivery, and each
//! subscriber then encodes its PUBLISH from it. A QoS 0 PUBLISH to a 3.x client has no packet
//! id and no properties, so the publisher can write its bytes into the session at once: the
//! connection takes them all in one move, and the message's bytes are the session's own (a
//! queued message pins no read buffer).

use bytes::BytesMut;
use cauldron_proto::QoS;

use crate::message::Message;

/// Encoded QoS 0 PUBLISH packets, in the order they were queued; then, while a drain runs,
/// the packets it takes from the queue for the same connection (`put`).
#[derive(Debug, Default)]
pub(super) struct Encoded {
    bytes: BytesMut,
    /// Queued packets in `bytes`.
    count: usize,
    /// Their payload bytes (what a session's byte limit counts).
    payload: usize,
    /// Packets in `bytes`, by QoS, queued or put.
    by_qos: [usize; 3],
}

/// What `Encoded::take` hands the connection: packets to write as they are.
#[derive(Debug)]
pub struct Packets {
    pub bytes: BytesMut,
    /// How many, by QoS.
    pub by_qos: [usize; 3],
}

impl Packets {
    pub fn count(&self) -> usize {
        self.by_qos.iter().sum()
    }
}

impl Encoded {
    /// Encodes `message` as the PUBLISH this client gets. False if it cannot be encoded (a
    /// topic or packet past the protocol's limits): the caller queues it the ordinary way.
    pub(super) fn push(&mut self, message: &Message, retain: bool) -> bool {
        let encoded = cauldron_proto::encode_publish_v3(
            &mut self.bytes,
            &message.topic,
            &message.payload,
            QoS::AtMostOnce,
            retain,
            None,
        );
        if encoded.is_ok() {
            self.count += 1;
            self.payload += message.payload.len();
            self.by_qos[0] += 1;
        }
        encoded.is_ok()
    }

    /// Encodes a PUBLISH a drain takes out of the queue, to go with the queued ones. False if
    /// it cannot be encoded.
    pub(super) fn put(&mut self, message: &Message, qos: QoS, retain: bool, packet_id: Option<u16>) -> bool {
        let (topic, payload) = (&message.topic, &message.payload);
        let encoded =
            cauldron_proto::encode_publish_v3(&mut self.bytes, topic, payload, qos, retain, packet_id);
        self.by_qos[qos as usize] += usize::from(encoded.is_ok());
        encoded.is_ok()
    }

    /// Whether `put` added packets since the last `take`.
    pub(super) fn has_put(&self) -> bool {
        self.by_qos.iter().sum::<usize>() > self.count
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn payload(&self) -> usize {
        self.payload
    }

    /// Everything queued, for the connection to write. The buffer's unused room stays here, so
    /// the next packets reuse its allocation once the connection is done with this part.
    pub(super) fn take(&mut self) -> Packets {
        (self.count, self.payload) = (0, 0);
        Packets { bytes: self.bytes.split(), by_qos: std::mem::take(&mut self.by_qos) }
    }

    /// Keeps the packets whose topic `keep` accepts; returns how many were dropped.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> usize {
        let all = self.take();
        let mut dropped = 0;
        for packet in PacketIter(all.bytes.freeze()) {
            match keep(packet.topic()) {
                true => {
                    self.bytes.extend_from_slice(&packet.bytes);
                    self.count += 1;
                    self.payload += packet.payload_len();
                }
                false => dropped += 1,
            }
        }
        dropped
    }
}

/// One packet `Encoded::push` wrote.
struct EncodedPacket {
    bytes: bytes::Bytes,
    /// Where the topic name starts (after the fixed header and its length field).
    topic_at: usize,
    topic_len: usize,
}

impl EncodedPacket {
    fn topic(&self) -> &str {
        // Written from a `&str` by `push`.
        std::str::from_utf8(&self.bytes[self.topic_at..self.topic_at + self.topic_len]).unwrap_or_default()
    }

    fn payload_len(&self) -> usize {
        self.bytes.len() - self.topic_at - self.topic_len
    }
}

/// Walks the packets of an `Encoded` buffer (each as `encode_publish_v3` wrote it for QoS 0).
struct PacketIter(bytes::Bytes);

impl Iterator for PacketIter {
    type Item = EncodedPacket;

    fn next(&mut self) -> Option<EncodedPacket> {
        let buf = &self.0;
        if buf.is_empty() {
            return None;
        }
        // Fixed header: one byte, then the remaining length (1-4 bytes, 7 bits each).
        let (mut body, mut at, mut shift) = (0usize, 1, 0);
        loop {
            let byte = buf[at];
            body |= usize::from(byte & 0x7f) << shift;
            at += 1;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let topic_len = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
        let bytes = self.0.split_to(at + body);
        Some(EncodedPacket { bytes, topic_at: at + 2, topic_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8]) -> Message {
        Message::new(topic.into(), bytes::Bytes::copy_from_slice(payload), QoS::AtMostOnce, false)
    }

    #[test]
    fn packets_are_the_publish_a_3x_client_is_sent() {
        let mut encoded = Encoded::default();
        assert!(encoded.push(&message("a/b", b"hi"), false));
        assert!(encoded.push(&message("c", &[7; 200]), true));
        assert_eq!((encoded.count(), encoded.payload()), (2, 202));
        let taken = encoded.take();
        assert_eq!(taken.by_qos, [2, 0, 0]);
        assert_eq!(&taken.bytes[..9], &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
        // 203 bytes of body: a two-byte remaining length.
        assert_eq!(&taken.bytes[9..14], &[0x31, 0xcb, 0x01, 0, 1]);
        assert_eq!(taken.bytes.len(), 9 + 3 + 203);
        assert_eq!((encoded.count(), encoded.payload()), (0, 0));
    }

    #[test]
    fn retain_keeps_the_packets_whose_topic_it_accepts_in_order() {
        let mut encoded = Encoded::default();
        for (topic, size) in [("keep/1", 1), ("drop", 300), ("keep/2", 20_000)] {
            encoded.push(&message(topic, &vec![1; size]), false);
        }
        assert_eq!(encoded.retain(|topic| topic.starts_with("keep")), 1);
        assert_eq!((encoded.count(), encoded.payload()), (2, 20_001));
        let topics: Vec<String> =
            PacketIter(encoded.take().bytes.freeze()).map(|p| p.topic().to_owned()).collect();
        assert_eq!(topics, ["keep/1", "keep/2"]);
    }
}
