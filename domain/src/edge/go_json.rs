//! JSON as Go's `encoding/json` writes it, for the async snapshot's hash:
//! compact, objects in the order their members were given (a Go struct's
//! field order, which Docker's own answers already follow), `<`, `>`, `&`,
//! U+2028 and U+2029 escaped as `\u003c`-style sequences, and floats in
//! Go's format. The hash is FNV-1a 32 over those bytes, as the Go agent
//! computes `dockerHash`.

use serde_json::{Number, Value};

/// `value` encoded as Go's `json.Encoder` would (without its newline).
pub fn encode(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// FNV-1a, 32 bits.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The hash Portainer checks before it applies a patch: FNV-1a 32 of the
/// snapshot encoded as Go encodes it.
pub fn snapshot_hash(snapshot: &Value) -> u32 {
    fnv1a_32(encode(snapshot).as_bytes())
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (index, (key, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{0}'..='\u{1f}' => {
                let code = c as u32;
                out.push_str("\\u");
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((code >> shift) & 0xf) as usize] as char);
                }
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// Integers as they are; floats as Go's `strconv.FormatFloat(f, 'f' or
/// 'e', -1, 64)` with its exponent clean-up (`1e+21`, `1e-07`).
fn write_number(out: &mut String, number: &Number) {
    if number.is_i64() || number.is_u64() {
        out.push_str(&number.to_string());
        return;
    }
    let Some(float) = number.as_f64() else {
        out.push_str(&number.to_string());
        return;
    };
    let magnitude = float.abs();
    if magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude) {
        // Rust's `{:e}` gives the shortest digits, as Go's -1 precision.
        let text = format!("{float:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        let digits = if digits.len() < 2 {
            format!("0{digits}")
        } else {
            digits.to_string()
        };
        out.push_str(&format!("{mantissa}e{sign}{digits}"));
    } else if float.fract() == 0.0 && magnitude < 1e21 {
        out.push_str(&format!("{float:.0}"));
    } else {
        out.push_str(&format!("{float}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_characters_and_controls_are_escaped_as_go_escapes_them() {
        let value =
            json!({"b": "<a href=\"x\">&amp;</a>\n\u{1}\u{2028}é", "a": [1, -2, true, null]});
        assert_eq!(
            encode(&value),
            r#"{"b":"\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e\n\u0001\u2028é","a":[1,-2,true,null]}"#
        );
    }

    #[test]
    fn members_keep_the_order_they_were_given() {
        let value: Value =
            serde_json::from_str(r#"{"Time":1,"DockerVersion":"26.1","Swarm":false}"#).unwrap();
        assert_eq!(
            encode(&value),
            r#"{"Time":1,"DockerVersion":"26.1","Swarm":false}"#
        );
    }

    #[test]
    fn floats_read_as_go_writes_them() {
        for (float, go) in [
            (1.5, "1.5"),
            (100.0, "100"),
            (1e21, "1e+21"),
            (1.25e-7, "1.25e-07"),
            (0.000001, "0.000001"),
            (-3.0e22, "-3e+22"),
        ] {
            let mut out = String::new();
            write_number(&mut out, &Number::from_f64(float).unwrap());
            assert_eq!(out, go, "{float}");
        }
    }

    #[test]
    fn fnv1a_32_matches_the_published_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }
}
