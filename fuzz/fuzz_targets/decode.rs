//! Decodes arbitrary bytes at every protocol level. Nothing may panic, and every packet the
//! decoder accepts must survive encode -> decode unchanged.
#![no_main]

use cauldron_proto::{decode, BytesMut, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, protocol, 1 << 20) {
            // A CONNECT carries its own level; everything else is encoded at the connection's.
            let level = match &packet {
                cauldron_proto::Packet::Connect(c) => c.protocol,
                _ => protocol,
            };
            let mut encoded = BytesMut::new();
            packet.encode(level, &mut encoded).expect("a decoded packet encodes");
            let again = decode(&mut encoded, level, usize::MAX).expect("re-decodes").expect("complete");
            assert_eq!(again, packet);
            assert!(encoded.is_empty());
        }
    }
});
