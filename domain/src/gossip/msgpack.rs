//! The msgpack dialect of HashiCorp's go-msgpack `MsgpackHandle`, which
//! memberlist and serf use: Go structs travel as maps keyed by field name,
//! and both strings and byte slices are written as the *old* spec's raw
//! type (fixstr, str16, str32; never str8 or bin). The reader accepts every
//! form of the current spec too, since other encoders may use them.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Every integer; go-msgpack writes unsigned values in unsigned forms.
    Int(i128),
    Float(f64),
    /// A raw (string or bytes): Go's encoder does not tell them apart.
    Raw(Vec<u8>),
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub message: String,
    /// The input ended before the value did: a stream may still bring the
    /// rest.
    pub truncated: bool,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "msgpack: {}", self.message)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError {
        message: what.into(),
        truncated: false,
    })
}

fn truncated<T>(what: &str) -> Result<T, DecodeError> {
    Err(DecodeError {
        message: what.into(),
        truncated: true,
    })
}

/// Nesting deeper than this is refused: no gossip message needs it, and a
/// hostile packet must not exhaust the stack.
const MAX_DEPTH: usize = 16;

impl Value {
    pub fn str(text: &str) -> Value {
        Value::Raw(text.as_bytes().to_vec())
    }

    pub fn uint(n: impl Into<u64>) -> Value {
        Value::Int(i128::from(n.into()))
    }

    /// A Go struct: a map from field names to values, in field order.
    pub fn record(fields: Vec<(&str, Value)>) -> Value {
        Value::Map(
            fields
                .into_iter()
                .map(|(name, value)| (Value::str(name), value))
                .collect(),
        )
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Nil => out.push(0xc0),
            Value::Bool(false) => out.push(0xc2),
            Value::Bool(true) => out.push(0xc3),
            Value::Int(n) => write_int(*n, out),
            Value::Float(x) => {
                out.push(0xcb);
                out.extend_from_slice(&x.to_be_bytes());
            }
            Value::Raw(bytes) => {
                write_len(bytes.len(), 0xa0, 32, 0xda, 0xdb, out);
                out.extend_from_slice(bytes);
            }
            Value::Array(items) => {
                write_len(items.len(), 0x90, 16, 0xdc, 0xdd, out);
                for item in items {
                    item.write(out);
                }
            }
            Value::Map(entries) => {
                write_len(entries.len(), 0x80, 16, 0xde, 0xdf, out);
                for (key, value) in entries {
                    key.write(out);
                    value.write(out);
                }
            }
        }
    }

    /// Decodes one value from the front of `input`; returns it and the
    /// bytes that follow it.
    ///
    /// # Errors
    /// Truncated input, an unknown marker, or nesting beyond the limit.
    pub fn decode(input: &[u8]) -> Result<(Value, &[u8]), DecodeError> {
        let mut reader = Reader { input, depth: 0 };
        let value = reader.value()?;
        Ok((value, reader.input))
    }

    /// The field of a struct-map, looked up by name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(key, _)| matches!(key, Value::Raw(k) if k == name.as_bytes()))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Raw(bytes) => Some(bytes),
            // Go's encoder writes a nil slice as nil.
            Value::Nil => Some(&[]),
            _ => None,
        }
    }
}

/// A length as the old spec writes it: the fix form, else 16 or 32 bits
/// (the old spec has no 8-bit lengths).
fn write_len(
    len: usize,
    fix: u8,
    fix_limit: usize,
    sixteen: u8,
    thirty_two: u8,
    out: &mut Vec<u8>,
) {
    if len < fix_limit {
        // fix_limit is at most 32, so the length fits the marker's low bits.
        out.push(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(sixteen);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(thirty_two);
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn write_int(n: i128, out: &mut Vec<u8>) {
    if (0..128).contains(&n) {
        out.push(n as u8);
    } else if n >= 0 {
        if let Ok(n) = u8::try_from(n) {
            out.extend_from_slice(&[0xcc, n]);
        } else if let Ok(n) = u16::try_from(n) {
            out.push(0xcd);
            out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            out.push(0xce);
            out.extend_from_slice(&n.to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u64::try_from(n).unwrap_or(u64::MAX).to_be_bytes());
        }
    } else if n >= -32 {
        out.push(n as i8 as u8);
    } else if let Ok(n) = i8::try_from(n) {
        out.extend_from_slice(&[0xd0, n as u8]);
    } else if let Ok(n) = i16::try_from(n) {
        out.push(0xd1);
        out.extend_from_slice(&n.to_be_bytes());
    } else if let Ok(n) = i32::try_from(n) {
        out.push(0xd2);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i64::try_from(n).unwrap_or(i64::MIN).to_be_bytes());
    }
}

struct Reader<'a> {
    input: &'a [u8],
    depth: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < n {
            return truncated("truncated");
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)))
    }

    fn signed(&mut self, n: usize) -> Result<i128, DecodeError> {
        let raw = self.be(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(i128::from(((raw << shift) as i64) >> shift))
    }

    fn raw(&mut self, len: u64) -> Result<Value, DecodeError> {
        let Ok(len) = usize::try_from(len) else {
            return err("length too large");
        };
        Ok(Value::Raw(self.take(len)?.to_vec()))
    }

    fn array(&mut self, len: u64) -> Result<Value, DecodeError> {
        self.nested(|reader| {
            // Each item takes at least a byte: a length beyond what is left
            // is a lie, refused before anything is allocated for it.
            if len > reader.input.len() as u64 {
                return truncated("array longer than its input");
            }
            (0..len)
                .map(|_| reader.value())
                .collect::<Result<_, _>>()
                .map(Value::Array)
        })
    }

    fn map(&mut self, len: u64) -> Result<Value, DecodeError> {
        self.nested(|reader| {
            if len.saturating_mul(2) > reader.input.len() as u64 {
                return truncated("map longer than its input");
            }
            (0..len)
                .map(|_| Ok((reader.value()?, reader.value()?)))
                .collect::<Result<_, _>>()
                .map(Value::Map)
        })
    }

    fn nested(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<Value, DecodeError>,
    ) -> Result<Value, DecodeError> {
        if self.depth >= MAX_DEPTH {
            return err("nested too deeply");
        }
        self.depth += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    fn value(&mut self) -> Result<Value, DecodeError> {
        let marker = self.take(1)?[0];
        match marker {
            0x00..=0x7f => Ok(Value::Int(i128::from(marker))),
            0x80..=0x8f => self.map(u64::from(marker & 0x0f)),
            0x90..=0x9f => self.array(u64::from(marker & 0x0f)),
            0xa0..=0xbf => self.raw(u64::from(marker & 0x1f)),
            0xc0 => Ok(Value::Nil),
            0xc2 => Ok(Value::Bool(false)),
            0xc3 => Ok(Value::Bool(true)),
            0xc4 | 0xd9 => {
                let len = self.be(1)?;
                self.raw(len)
            }
            0xc5 | 0xda => {
                let len = self.be(2)?;
                self.raw(len)
            }
            0xc6 | 0xdb => {
                let len = self.be(4)?;
                self.raw(len)
            }
            0xca => Ok(Value::Float(f64::from(f32::from_bits(self.be(4)? as u32)))),
            0xcb => Ok(Value::Float(f64::from_bits(self.be(8)?))),
            0xcc => Ok(Value::Int(i128::from(self.be(1)?))),
            0xcd => Ok(Value::Int(i128::from(self.be(2)?))),
            0xce => Ok(Value::Int(i128::from(self.be(4)?))),
            0xcf => Ok(Value::Int(i128::from(self.be(8)?))),
            0xd0 => self.signed(1).map(Value::Int),
            0xd1 => self.signed(2).map(Value::Int),
            0xd2 => self.signed(4).map(Value::Int),
            0xd3 => self.signed(8).map(Value::Int),
            0xdc => {
                let len = self.be(2)?;
                self.array(len)
            }
            0xdd => {
                let len = self.be(4)?;
                self.array(len)
            }
            0xde => {
                let len = self.be(2)?;
                self.map(len)
            }
            0xdf => {
                let len = self.be(4)?;
                self.map(len)
            }
            0xe0..=0xff => Ok(Value::Int(i128::from(marker as i8))),
            other => err(format!("unsupported marker 0x{other:02x}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value) {
        let bytes = value.encode();
        let (back, rest) = Value::decode(&bytes).unwrap();
        assert_eq!(back, value);
        assert!(rest.is_empty());
    }

    #[test]
    fn values_survive_a_round_trip() {
        for n in [
            0i128,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            u64::MAX.into(),
            -1,
            -32,
            -33,
            -129,
            -40_000,
            i64::MIN.into(),
        ] {
            round_trip(Value::Int(n));
        }
        round_trip(Value::Raw(vec![7; 31]));
        round_trip(Value::Raw(vec![7; 40]));
        round_trip(Value::Raw(vec![7; 70_000]));
        round_trip(Value::Array((0..20).map(Value::Int).collect()));
        round_trip(Value::record(vec![
            ("Node", Value::str("a")),
            ("Ok", Value::Bool(true)),
        ]));
    }

    #[test]
    fn raws_use_the_old_spec_forms_that_go_msgpack_writes() {
        assert_eq!(Value::Raw(vec![1; 40]).encode()[..3], [0xda, 0, 40]);
        assert_eq!(Value::str("ab").encode(), [0xa2, b'a', b'b']);
    }

    #[test]
    fn new_spec_strings_and_binaries_are_read() {
        assert_eq!(Value::decode(&[0xd9, 1, b'x']).unwrap().0, Value::str("x"));
        assert_eq!(Value::decode(&[0xc4, 1, 9]).unwrap().0, Value::Raw(vec![9]));
    }

    #[test]
    fn hostile_lengths_and_depths_are_refused() {
        assert!(Value::decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Value::decode(&[0xdb, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Value::decode(&[0x91; 40]).is_err());
        assert!(Value::decode(&[]).is_err());
        assert!(Value::decode(&[0xc1]).is_err());
    }
}
