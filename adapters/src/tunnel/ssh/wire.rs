//! SSH's data types (RFC 4251 §5): big-endian integers, length-prefixed
//! strings, mpints and name-lists.

use std::fmt;

/// A message being built.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    bytes: Vec<u8>,
}

impl Encoder {
    pub fn message(kind: u8) -> Self {
        Encoder { bytes: vec![kind] }
    }

    pub fn byte(mut self, value: u8) -> Self {
        self.bytes.push(value);
        self
    }

    pub fn boolean(self, value: bool) -> Self {
        self.byte(u8::from(value))
    }

    pub fn u32(mut self, value: u32) -> Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn raw(mut self, value: &[u8]) -> Self {
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn string(self, value: impl AsRef<[u8]>) -> Self {
        let value = value.as_ref();
        let length = u32::try_from(value.len()).expect("SSH strings are under 4 GiB");
        self.u32(length).raw(value)
    }

    /// An unsigned big-endian integer as an mpint: no leading zero bytes,
    /// one zero byte added when the high bit is set.
    pub fn mpint(self, unsigned: &[u8]) -> Self {
        let trimmed = match unsigned.iter().position(|&b| b != 0) {
            Some(start) => &unsigned[start..],
            None => &[][..],
        };
        if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
            let mut padded = Vec::with_capacity(trimmed.len() + 1);
            padded.push(0);
            padded.extend_from_slice(trimmed);
            self.string(padded)
        } else {
            self.string(trimmed)
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// The peer sent something that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed SSH message: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Reads a received message field by field.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Decoder { rest: bytes }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        if self.rest.len() < n {
            return Err(Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn byte(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1, "truncated byte")?[0])
    }

    pub fn boolean(&mut self) -> Result<bool, Malformed> {
        Ok(self.byte()? != 0)
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let bytes = self.take(4, "truncated uint32")?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn string(&mut self) -> Result<&'a [u8], Malformed> {
        let length = self.u32()? as usize;
        self.take(length, "truncated string")
    }

    pub fn text(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.string()?).map_err(|_| Malformed("string is not UTF-8"))
    }

    pub fn name_list(&mut self) -> Result<Vec<&'a str>, Malformed> {
        let text = self.text()?;
        Ok(if text.is_empty() {
            Vec::new()
        } else {
            text.split(',').collect()
        })
    }

    pub fn skip(&mut self, n: usize) -> Result<(), Malformed> {
        self.take(n, "truncated field").map(|_| ())
    }

    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpints_follow_rfc_4251_examples() {
        let encoded = |n: &[u8]| Encoder::default().mpint(n).finish();
        assert_eq!(encoded(&[0, 0]), [0, 0, 0, 0]);
        assert_eq!(
            encoded(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]),
            [0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        assert_eq!(encoded(&[0x80]), [0, 0, 0, 2, 0x00, 0x80]);
    }

    #[test]
    fn decoding_reads_back_what_was_encoded_and_refuses_truncation() {
        let bytes = Encoder::message(80)
            .string("ping")
            .boolean(true)
            .u32(7)
            .string("a,b")
            .finish();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.byte().unwrap(), 80);
        assert_eq!(d.text().unwrap(), "ping");
        assert!(d.boolean().unwrap());
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.name_list().unwrap(), ["a", "b"]);
        assert!(d.byte().is_err());
        assert!(Decoder::new(&[0, 0, 0, 9, 1]).string().is_err());
    }
}
