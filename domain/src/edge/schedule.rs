//! Edge jobs (reference §10.8): the schedules in a poll answer, what
//! changed since the last one, and the translation of Portainer's cron
//! expressions (standard 5-field crontab, Sunday = 0 or 7) into the 6-field,
//! Sunday = 1 form that berth's scheduler reads.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use serde_json::Value;

use super::status::field;

/// One scheduled script, as Portainer sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: u64,
    pub cron: String,
    pub script: Vec<u8>,
    pub version: u64,
    pub collect_logs: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("id", &self.id)
            .field("cron", &self.cron)
            .field("script_bytes", &self.script.len())
            .field("version", &self.version)
            .field("collect_logs", &self.collect_logs)
            .finish()
    }
}

/// A schedule that could not be read: reported, never fatal to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSchedule {
    pub id: Option<u64>,
    pub why: String,
}

/// The `schedules` of a poll answer: the usable ones, and the others with
/// their reason. `None` when the answer has no list (nothing changes).
pub fn parse_schedules(answer: &Value) -> Option<(Vec<Schedule>, Vec<BadSchedule>)> {
    let list = answer.as_object().and_then(|o| field(o, "schedules"))?;
    let items = match list {
        Value::Null => return Some((Vec::new(), Vec::new())),
        Value::Array(items) => items,
        _ => {
            let bad = BadSchedule {
                id: None,
                why: "schedules is not a list".into(),
            };
            return Some((Vec::new(), vec![bad]));
        }
    };
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for item in items {
        match parse_one(item) {
            Ok(schedule) => good.push(schedule),
            Err(error) => bad.push(error),
        }
    }
    Some((good, bad))
}

fn parse_one(item: &Value) -> Result<Schedule, BadSchedule> {
    let object = item.as_object().ok_or(BadSchedule {
        id: None,
        why: "a schedule is not an object".into(),
    })?;
    let id = field(object, "ID").and_then(Value::as_u64);
    let fail = |why: &str| BadSchedule {
        id,
        why: why.to_string(),
    };
    let id = id.ok_or_else(|| fail("the schedule has no numeric ID"))?;
    let cron = field(object, "CronExpression")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("the schedule has no cron expression"))?;
    let cron = to_scheduler_cron(cron).map_err(|why| fail(&why))?;
    let script_text = field(object, "Script")
        .and_then(Value::as_str)
        .unwrap_or("");
    let script = decode_script(script_text).ok_or_else(|| fail("the script is not base64"))?;
    Ok(Schedule {
        id,
        cron,
        script,
        version: field(object, "Version")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        collect_logs: field(object, "CollectLogs")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Portainer encodes scripts without padding; padded text is accepted too.
fn decode_script(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.ends_with('=') {
        STANDARD.decode(text).ok()
    } else {
        STANDARD_NO_PAD.decode(text).ok()
    }
}

/// What to do to go from the running schedules to the wanted ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleChanges {
    /// New, or with another version (or expression or script): (re)start.
    pub start: Vec<Schedule>,
    /// No longer listed: stop.
    pub stop: Vec<u64>,
}

impl ScheduleChanges {
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.stop.is_empty()
    }
}

/// Every difference counts, including one schedule removed while others
/// stay (the Go agent misses that one).
pub fn diff(running: &BTreeMap<u64, Schedule>, wanted: &[Schedule]) -> ScheduleChanges {
    let start = wanted
        .iter()
        .filter(|w| running.get(&w.id) != Some(*w))
        .cloned()
        .collect();
    let stop = running
        .keys()
        .filter(|id| !wanted.iter().any(|w| w.id == **id))
        .copied()
        .collect();
    ScheduleChanges { start, stop }
}

/// Translates a crontab expression for the scheduler: 5 fields get a `0`
/// seconds field (6 fields are taken as already having seconds), and
/// numeric days of the week move from 0–7 (Sunday 0 or 7) to 1–7
/// (Sunday 1). Macros such as `@hourly` are expanded.
///
/// # Errors
/// When the expression does not have 5 or 6 fields, or a day of the week is
/// not understood.
pub fn to_scheduler_cron(expression: &str) -> Result<String, String> {
    let expression = match expression.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let (seconds, rest) = match fields.len() {
        5 => ("0", &fields[..]),
        6 => (fields[0], &fields[1..]),
        n => {
            return Err(format!(
                "the cron expression {expression:?} has {n} fields, not 5 (or 6 with seconds)"
            ))
        }
    };
    let day_of_week = translate_days_of_week(rest[4])
        .ok_or_else(|| format!("the day of week {:?} is not understood", rest[4]))?;
    Ok(format!(
        "{seconds} {} {} {} {} {day_of_week}",
        rest[0], rest[1], rest[2], rest[3]
    ))
}

fn translate_days_of_week(field: &str) -> Option<String> {
    if field == "*" || field == "?" {
        return Some(field.to_string());
    }
    let mut out = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step.parse::<u32>().ok().filter(|s| *s > 0)?)),
            None => (item, None),
        };
        if base.chars().any(|c| c.is_ascii_alphabetic()) {
            // Names mean the same to both.
            out.push(item.to_string());
            continue;
        }
        let (from, to) = match (base, base.split_once('-')) {
            ("*", _) => (0, 6),
            (_, Some((a, b))) => (a.parse().ok()?, b.parse().ok()?),
            (n, None) => {
                let n: u32 = n.parse().ok()?;
                (n, if step.is_some() { 6 } else { n })
            }
        };
        if from > 7 || to > 7 || from > to {
            return None;
        }
        let step = step.unwrap_or(1) as usize;
        for day in (from..=to).step_by(step) {
            let mapped = (day % 7) + 1;
            let text = mapped.to_string();
            if !out.contains(&text) {
                out.push(text);
            }
        }
    }
    Some(out.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule(id: u64, version: u64) -> Schedule {
        Schedule {
            id,
            cron: "0 * * * * *".into(),
            script: b"echo hi".to_vec(),
            version,
            collect_logs: false,
        }
    }

    #[test]
    fn schedules_decode_with_either_id_spelling_and_bad_ones_are_set_aside() {
        let answer = json!({"schedules": [
            {"Id": 1, "CronExpression": "*/5 * * * *", "Script": "ZWNobyBoaQ", "Version": 2, "CollectLogs": true},
            {"ID": 2, "CronExpression": "0 0 * * 0", "Script": "ZWNobyBoaQ==", "Version": 1},
            {"Id": 3, "CronExpression": "not cron", "Script": "eA"},
            {"Id": 4, "CronExpression": "* * * * *", "Script": "***"},
            "junk"
        ]});
        let (good, bad) = parse_schedules(&answer).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[0].id, 1);
        assert_eq!(good[0].script, b"echo hi");
        assert_eq!(good[0].cron, "0 */5 * * * *");
        assert!(good[0].collect_logs);
        assert_eq!(good[1].cron, "0 0 0 * * 1", "Sunday is 1 for the scheduler");
        assert_eq!(
            bad.iter().map(|b| b.id).collect::<Vec<_>>(),
            [Some(3), Some(4), None]
        );
        assert!(parse_schedules(&json!({"status": "IDLE"})).is_none());
        assert_eq!(parse_schedules(&json!({"schedules": null})).unwrap().0, []);
    }

    #[test]
    fn the_diff_sees_additions_new_versions_and_lone_removals() {
        let running: BTreeMap<u64, Schedule> = [
            (1, schedule(1, 1)),
            (2, schedule(2, 1)),
            (3, schedule(3, 1)),
        ]
        .into();
        let changes = diff(&running, &[schedule(1, 1), schedule(2, 2), schedule(4, 1)]);
        assert_eq!(
            changes.start.iter().map(|s| s.id).collect::<Vec<_>>(),
            [2, 4]
        );
        assert_eq!(changes.stop, [3], "one removal among others still counts");
        let same = diff(&running, &[schedule(1, 1), schedule(2, 1), schedule(3, 1)]);
        assert!(same.is_empty());
        assert_eq!(diff(&running, &[]).stop, [1, 2, 3]);
    }

    #[test]
    fn crontab_days_of_week_become_the_schedulers() {
        let cases = [
            ("* * * * *", "0 * * * * *"),
            ("*/10 * * * * *", "*/10 * * * * *"),
            ("0 9 * * 1-5", "0 0 9 * * 2,3,4,5,6"),
            ("0 9 * * 0,6", "0 0 9 * * 1,7"),
            ("0 9 * * 7", "0 0 9 * * 1"),
            ("0 9 * * 5-7", "0 0 9 * * 6,7,1"),
            ("0 9 * * */2", "0 0 9 * * 1,3,5,7"),
            ("0 9 * * MON-FRI", "0 0 9 * * MON-FRI"),
            ("@hourly", "0 0 * * * *"),
        ];
        for (crontab, expected) in cases {
            assert_eq!(to_scheduler_cron(crontab).unwrap(), expected, "{crontab}");
        }
        assert!(to_scheduler_cron("* * *").is_err());
        assert!(to_scheduler_cron("* * * * 8").is_err());
        assert!(to_scheduler_cron("* * * * 5-2").is_err());
    }
}
