//! The Schema Registry wire format (DESIGN §15): what Confluent-compatible
//! serializers put before the JSON or protobuf they write: a magic byte 0,
//! the schema id (4 bytes, big-endian) and, for protobuf, the indexes of the
//! message in its schema (a zigzag varint count, then each index; `[0]`,
//! the first message, is the single byte 0). Neither JSON nor a protobuf
//! message starts with a zero byte (field number 0 does not exist), so the
//! frame is recognised by its first byte alone.

use std::collections::HashSet;

use parking_lot::Mutex;

use super::encoding::Encoding;
use super::invalid::Invalid;

/// The magic byte of a framed message.
const MAGIC: u8 = 0;
/// Most message indexes accepted (nesting depth in the schema).
const MAX_INDEXES: u64 = 16;
/// Most schema ids remembered for logging once each.
const MAX_REMEMBERED: usize = 1_000;

/// The message inside a frame: `payload` itself when it is not framed.
pub fn unframe(payload: &[u8], encoding: Encoding) -> Result<(&[u8], Option<u32>), Invalid> {
    if payload.first() != Some(&MAGIC) {
        return Ok((payload, None));
    }
    let Some((id, mut rest)) = payload.get(1..5).map(|id| (id, &payload[5..])) else {
        return Err(Invalid::Malformed(
            "a schema registry frame shorter than its 5-byte header".into(),
        ));
    };
    let id = u32::from_be_bytes(id.try_into().expect("4 bytes"));
    if encoding == Encoding::Protobuf {
        let malformed =
            || Invalid::Malformed("a schema registry frame with unreadable message indexes".into());
        let count = zigzag(prost::encoding::decode_varint(&mut rest).map_err(|_| malformed())?);
        if !(0..=MAX_INDEXES as i64).contains(&count) {
            return Err(malformed());
        }
        for _ in 0..count {
            prost::encoding::decode_varint(&mut rest).map_err(|_| malformed())?;
        }
    }
    Ok((rest, Some(id)))
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The schema ids seen, so that each is logged once.
#[derive(Default)]
pub struct SeenSchemas(Mutex<HashSet<u32>>);

impl SeenSchemas {
    /// Logs `id` the first time it is seen.
    pub fn note(&self, id: u32) {
        let mut seen = self.0.lock();
        if seen.len() < MAX_REMEMBERED && seen.insert(id) {
            tracing::info!(
                schema_id = id,
                "messages framed by a schema registry: decoded as the JSON or protobuf they carry"
            );
        }
    }
}

/// A frame as the Confluent serializers build it: magic byte, schema id,
/// then for protobuf the message indexes (zigzag varints, `[0]` as a
/// single 0).
#[cfg(test)]
pub(crate) fn frame(id: u32, indexes: Option<&[i64]>, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    match indexes {
        None => {}
        Some([0]) => out.push(0),
        Some(ix) => {
            let mut put =
                |v: i64| prost::encoding::encode_varint(((v << 1) ^ (v >> 63)) as u64, &mut out);
            put(ix.len() as i64);
            for i in ix {
                put(*i);
            }
        }
    }
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_protobuf_frames_give_what_they_carry() {
        let json = br#"{"type":"page_view"}"#;
        assert_eq!(
            unframe(&frame(7, None, json), Encoding::Json).unwrap(),
            (&json[..], Some(7))
        );
        let proto = [0x0a, 0x02, 0x08, 0x01];
        for ix in [&[0][..], &[1], &[2, 0, 5]] {
            let framed = frame(258, Some(ix), &proto);
            assert_eq!(
                unframe(&framed, Encoding::Protobuf).unwrap(),
                (&proto[..], Some(258)),
                "{ix:?}"
            );
        }
        assert_eq!(
            unframe(json, Encoding::Json).unwrap(),
            (&json[..], None),
            "not framed"
        );
    }

    #[test]
    fn broken_frames_are_malformed() {
        for bad in [
            &[0u8, 0, 0][..],
            &[0, 0, 0, 0, 1, 0xff],
            &[0, 0, 0, 0, 1, 0x7e],
        ] {
            let e = unframe(bad, Encoding::Protobuf).unwrap_err();
            assert_eq!(e.code(), "malformed", "{bad:?}");
        }
    }
}
