//! The fields of a task beyond its text: due date, priority and labels, each checked and
//! turned into what the tables hold in one place.

use super::{StoreError, check_text, quote};
use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveTime, SecondsFormat, SubsecRound, TimeZone,
    Utc,
};
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::SmallInt;
use diesel::sqlite::Sqlite;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Most labels on one task.
pub const MAX_LABELS: usize = 20;
/// Most characters of one label.
pub const LABEL_CHARS: usize = 60;

/// When a task is due: a whole day, or a moment with the offset it was given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Day(NaiveDate),
    At(DateTime<FixedOffset>),
}

/// `due_at` of a task that has no due date: after every due date, so "soonest first,
/// undated last" is one index order (see the migration).
pub fn no_due() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_opt(23, 59, 59))
        .map(|moment| moment.and_utc())
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Due {
    /// `2026-12-01` or `2026-12-01T09:00:00+01:00` (RFC 3339; `Z` for UTC).
    pub fn parse(field: &'static str, raw: &str) -> Result<Due, StoreError> {
        let text = raw.trim();
        let due = if text.len() == 10 {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(Due::Day)
        } else {
            DateTime::parse_from_rfc3339(text).map(Due::At)
        }
        .map_err(|_| {
            StoreError::invalid(
                field,
                format!(
                    "{} is not a date (2026-12-01) or a date-time with an offset \
                     (2026-12-01T09:00:00+01:00, or Z for UTC)",
                    quote(raw)
                ),
            )
        })?;
        if !(1..=9998).contains(&due.instant().year()) {
            return Err(StoreError::invalid(
                field,
                format!("{} is outside the years 1 to 9998", quote(raw)),
            ));
        }
        Ok(due)
    }

    /// What the task returns: as given, an all-day date or a date-time with its offset.
    pub fn text(&self) -> String {
        match self {
            Due::Day(day) => day.format("%Y-%m-%d").to_string(),
            Due::At(at) => at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }

    /// What it sorts and filters by: the moment, or the day's start in UTC.
    pub fn instant(&self) -> DateTime<Utc> {
        match self {
            Due::Day(day) => Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN)),
            Due::At(at) => at.with_timezone(&Utc).trunc_subsecs(6),
        }
    }
}

/// How urgent a task is.
// Stored as its `level` (SMALLINT), so that "most urgent first" is the index's order.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    AsExpression,
    FromSqlRow,
)]
#[serde(rename_all = "lowercase")]
#[diesel(sql_type = SmallInt)]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Urgent,
    ];

    /// The column's value: higher is more urgent, so "most urgent first" is descending.
    pub fn level(self) -> i16 {
        self as i16
    }

    /// The priority stored as `level`, if there is one.
    pub fn from_level(level: i16) -> Option<Priority> {
        Priority::ALL.get(usize::try_from(level).ok()?).copied()
    }
}

impl ToSql<SmallInt, Pg> for Priority {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(&self.level().to_be_bytes())?;
        Ok(IsNull::No)
    }
}

impl ToSql<SmallInt, Sqlite> for Priority {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(i32::from(self.level()));
        Ok(IsNull::No)
    }
}

impl<DB: Backend> FromSql<SmallInt, DB> for Priority
where
    i16: FromSql<SmallInt, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let level = i16::from_sql(bytes)?;
        Priority::from_level(level)
            .ok_or_else(|| format!("{level} is not a priority level (0 to 3)").into())
    }
}

/// A label as given, and as matched (case-folded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub text: String,
    pub key: String,
}

impl Label {
    pub fn new(field: &'static str, raw: &str) -> Result<Label, StoreError> {
        let text = check_text(field, raw, LABEL_CHARS, true)?;
        let key = text.to_lowercase();
        Ok(Label { text, key })
    }
}

/// A task's labels: at most [`MAX_LABELS`], each 1 to [`LABEL_CHARS`] characters, no two
/// the same but for case.
pub fn check_labels(raw: &[String]) -> Result<Vec<Label>, StoreError> {
    if raw.len() > MAX_LABELS {
        return Err(StoreError::invalid(
            "labels",
            format!("{} labels; a task takes at most {MAX_LABELS}", raw.len()),
        ));
    }
    let mut labels: Vec<Label> = Vec::with_capacity(raw.len());
    for text in raw {
        let label = Label::new("labels", text)?;
        if labels.iter().any(|seen| seen.key == label.key) {
            return Err(StoreError::invalid(
                "labels",
                format!(
                    "{} is given twice (labels are compared case-insensitively)",
                    quote(&label.text)
                ),
            ));
        }
        labels.push(label);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dues_keep_what_they_were_given() {
        let day = Due::parse("due", "2026-12-01").unwrap();
        assert_eq!(day.text(), "2026-12-01");
        assert_eq!(day.instant().to_rfc3339(), "2026-12-01T00:00:00+00:00");
        let at = Due::parse("due", " 2026-12-01T09:00:00+01:00 ").unwrap();
        assert_eq!(at.text(), "2026-12-01T09:00:00+01:00");
        assert_eq!(at.instant().to_rfc3339(), "2026-12-01T08:00:00+00:00");
        assert_eq!(
            Due::parse("due", "2026-12-01t09:00:00z").unwrap().text(),
            "2026-12-01T09:00:00Z"
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-12-01T09:00:00",
            "tomorrow",
            "",
            "0000-01-01",
            "9999-12-31",
        ] {
            assert!(
                matches!(
                    Due::parse("due", bad),
                    Err(StoreError::Invalid { field: "due", .. })
                ),
                "{bad}"
            );
        }
        assert!(Due::parse("due", "9998-12-31").unwrap().instant() < no_due());
    }

    #[test]
    fn labels_are_unique_but_for_case_and_bounded() {
        let labels = check_labels(&["Work".into(), " home ".into()]).unwrap();
        assert_eq!(labels[0].key, "work");
        assert_eq!(labels[1].text, "home");
        assert!(check_labels(&["Work".into(), "WORK".into()]).is_err());
        assert!(check_labels(&["".into()]).is_err());
        assert!(check_labels(&["x".repeat(61)]).is_err());
        assert!(check_labels(&vec!["a".to_owned(); 21]).is_err());
        let many: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
        assert_eq!(check_labels(&many).unwrap().len(), 20);
    }

    #[test]
    fn priorities_order_by_urgency() {
        for priority in Priority::ALL {
            assert_eq!(Priority::from_level(priority.level()), Some(priority));
        }
        assert!(Priority::Urgent.level() > Priority::High.level());
    }
}
