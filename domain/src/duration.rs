//! Go-style duration strings (`72h`, `1h30m`, `500ms`), as the Portainer
//! agent's options accept them.

use std::time::Duration;

/// Parses a Go duration: one or more `<number><unit>` pairs, where the
/// number may have a fraction and the unit is one of `ns`, `us`, `µs`, `ms`,
/// `s`, `m`, `h`. A lone `0` is also accepted. Negative durations are not.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let nanos_per_unit = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_nanos += value * nanos_per_unit;
        rest = tail;
    }
    // Go durations are signed 64-bit nanoseconds; anything larger is an error there too.
    if !total_nanos.is_finite() || total_nanos > i64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_go_forms() {
        let cases = [
            ("72h", Duration::from_secs(72 * 3600)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10us", Duration::from_micros(10)),
            ("+5m", Duration::from_secs(300)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "", "3 days", "3d", "10", "-5s", "s", "1..5s", "5S", "abc", "5m ", " 5m", "1e3s", ".s",
        ] {
            assert_eq!(parse_go_duration(text), None, "{text:?}");
        }
    }
}
