//! Protobuf fields written straight from borrowed data, with prost's own field encoders: for encodings made on the
//! hot path (the store's blobs, the server's events for subscribers), where building a prost message first would copy
//! every text and allocate a vector per list only to write them out. A field at its default is left out, as prost
//! leaves it out, so what is written here decodes as the message types it mirrors (and, field for field in the same
//! order, is byte for byte what prost writes for them: the codec's and the server's tests check that).

use prost::Message;
use prost::encoding::{self, WireType, encode_key, encode_varint, encoded_len_varint};

pub fn uint64(tag: u32, v: u64, b: &mut Vec<u8>) {
    if v != 0 {
        encoding::uint64::encode(tag, &v, b);
    }
}

pub fn uint32(tag: u32, v: u32, b: &mut Vec<u8>) {
    if v != 0 {
        encoding::uint32::encode(tag, &v, b);
    }
}

pub fn int64(tag: u32, v: i64, b: &mut Vec<u8>) {
    if v != 0 {
        encoding::int64::encode(tag, &v, b);
    }
}

/// An `int32` field, or an enum's number.
pub fn int32(tag: u32, v: i32, b: &mut Vec<u8>) {
    if v != 0 {
        encoding::int32::encode(tag, &v, b);
    }
}

pub fn sint64(tag: u32, v: i64, b: &mut Vec<u8>) {
    if v != 0 {
        encoding::sint64::encode(tag, &v, b);
    }
}

pub fn double(tag: u32, v: f64, b: &mut Vec<u8>) {
    if v != 0.0 {
        encoding::double::encode(tag, &v, b);
    }
}

/// An `optional double`: written when it has a value, even 0.
/// A packed `repeated double`; an empty list writes nothing, as prost does.
pub fn packed_doubles(tag: u32, v: &[f64], b: &mut Vec<u8>) {
    if !v.is_empty() {
        prost::encoding::double::encode_packed(tag, v, b);
    }
}

pub fn optional_double(tag: u32, v: Option<f64>, b: &mut Vec<u8>) {
    if let Some(v) = v {
        encoding::double::encode(tag, &v, b);
    }
}

/// An `optional uint32`: written when it has a value, even 0.
pub fn optional_uint32(tag: u32, v: Option<u32>, b: &mut Vec<u8>) {
    if let Some(v) = v {
        encoding::uint32::encode(tag, &v, b);
    }
}

pub fn boolean(tag: u32, v: bool, b: &mut Vec<u8>) {
    if v {
        encoding::bool::encode(tag, &v, b);
    }
}

/// A text field (left out when empty).
pub fn text(tag: u32, v: &str, b: &mut Vec<u8>) {
    if !v.is_empty() {
        repeated_text(tag, v, b);
    }
}

/// An element of a repeated text field: written even when empty.
pub fn repeated_text(tag: u32, v: &str, b: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, b);
    encode_varint(v.len() as u64, b);
    b.extend_from_slice(v.as_bytes());
}

pub fn blob<M: Message>(tag: u32, m: &M, b: &mut Vec<u8>) {
    encoding::message::encode(tag, m, b);
}

/// A nested message written by `body` in place: one byte is kept for its length, and the body moves along when its
/// length needs more.
pub fn message(tag: u32, b: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, b);
    let at = b.len();
    b.push(0);
    body(b);
    let len = (b.len() - at - 1) as u64;
    if len < 0x80 {
        b[at] = len as u8;
    } else {
        let mut prefix = [0u8; 10];
        let n = encoded_len_varint(len);
        encode_varint(len, &mut &mut prefix[..n]);
        b.splice(at..at + 1, prefix[..n].iter().copied());
    }
}

/// [`message`] with a body that can fail.
pub fn try_message<E>(tag: u32, b: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<(), E> {
    let mut outcome = Ok(());
    message(tag, b, |b| outcome = body(b));
    outcome
}
