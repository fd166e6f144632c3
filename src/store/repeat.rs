//! Repeating tasks: a rule in RFC 5545's RRULE syntax, the subset people use for to-dos,
//! and the next occurrence after a due date.
//!
//! * `FREQ=DAILY|WEEKLY|MONTHLY|YEARLY` (required), `INTERVAL=n` (1 to 1000, default 1);
//! * `BYDAY=MO,WE,…` with `WEEKLY` (default: the due date's weekday; weeks start Monday);
//! * `BYMONTHDAY=1,15,-1,…` with `MONTHLY` (default: the due date's day; -1 is the last
//!   day). As RFC 5545 says, a month without the day is skipped (the 31st repeats in
//!   months that have one); `YEARLY` from February 29 repeats in leap years.
//!
//! An `RRULE:` prefix is accepted; anything else (`COUNT`, `UNTIL`, `BYSETPOS`, …) is
//! refused by name. A date-time repeats at the same local time in the offset it was given
//! (a fixed offset: daylight saving time is not followed).

use super::task_fields::Due;
use super::{StoreError, quote};
use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, TimeZone, Weekday};

/// The longest rule text.
pub const RULE_CHARS: usize = 200;
const FIELD: &str = "repeat";
/// How many periods (months for MONTHLY, years for YEARLY) the next occurrence is looked
/// for in: a leap day, or a 31st every other month, is always found well within them.
const SEARCH_PERIODS: u32 = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frequency {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Frequency {
    fn name(self) -> &'static str {
        match self {
            Frequency::Daily => "DAILY",
            Frequency::Weekly => "WEEKLY",
            Frequency::Monthly => "MONTHLY",
            Frequency::Yearly => "YEARLY",
        }
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    frequency: Frequency,
    interval: u32,
    weekdays: Vec<Weekday>,
    month_days: Vec<i32>,
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("MO", Weekday::Mon),
    ("TU", Weekday::Tue),
    ("WE", Weekday::Wed),
    ("TH", Weekday::Thu),
    ("FR", Weekday::Fri),
    ("SA", Weekday::Sat),
    ("SU", Weekday::Sun),
];

fn invalid(message: String) -> StoreError {
    StoreError::invalid(FIELD, message)
}

impl Repeat {
    pub fn parse(raw: &str) -> Result<Repeat, StoreError> {
        let text = raw.trim();
        if text.chars().count() > RULE_CHARS {
            return Err(invalid(format!(
                "is {} characters; the limit is {RULE_CHARS}",
                text.chars().count()
            )));
        }
        let upper = text.to_ascii_uppercase();
        let rule = upper.strip_prefix("RRULE:").unwrap_or(&upper);
        let mut frequency = None;
        let mut interval = None;
        let mut weekdays = Vec::new();
        let mut month_days = Vec::new();
        for part in rule.split(';').filter(|part| !part.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "{} is not NAME=VALUE (e.g. FREQ=WEEKLY;BYDAY=MO)",
                    quote(part)
                ))
            })?;
            match name {
                "FREQ" => {
                    frequency = Some(match value {
                        "DAILY" => Frequency::Daily,
                        "WEEKLY" => Frequency::Weekly,
                        "MONTHLY" => Frequency::Monthly,
                        "YEARLY" => Frequency::Yearly,
                        _ => {
                            return Err(invalid(format!(
                                "FREQ={} is not DAILY, WEEKLY, MONTHLY or YEARLY",
                                quote(value)
                            )));
                        }
                    })
                }
                "INTERVAL" => {
                    interval = Some(
                        value
                            .parse::<u32>()
                            .ok()
                            .filter(|n| (1..=1000).contains(n))
                            .ok_or_else(|| {
                                invalid(format!("INTERVAL={} is not 1 to 1000", quote(value)))
                            })?,
                    )
                }
                "BYDAY" => {
                    for day in value.split(',') {
                        let weekday = WEEKDAYS
                            .iter()
                            .find(|(name, _)| *name == day)
                            .map(|(_, weekday)| *weekday)
                            .ok_or_else(|| {
                                invalid(format!(
                                    "BYDAY {} is not one of MO, TU, WE, TH, FR, SA, SU",
                                    quote(day)
                                ))
                            })?;
                        if !weekdays.contains(&weekday) {
                            weekdays.push(weekday);
                        }
                    }
                }
                "BYMONTHDAY" => {
                    for day in value.split(',') {
                        let n = day
                            .parse::<i32>()
                            .ok()
                            .filter(|n| (1..=31).contains(n) || (-31..=-1).contains(n))
                            .ok_or_else(|| {
                                invalid(format!(
                                    "BYMONTHDAY {} is not 1 to 31 or -1 to -31",
                                    quote(day)
                                ))
                            })?;
                        if !month_days.contains(&n) {
                            month_days.push(n);
                        }
                    }
                }
                "WKST" if value == "MO" => {}
                _ => {
                    return Err(invalid(format!(
                        "{} is not supported: use FREQ, INTERVAL, BYDAY (with WEEKLY) and \
                         BYMONTHDAY (with MONTHLY)",
                        quote(name)
                    )));
                }
            }
        }
        let frequency = frequency
            .ok_or_else(|| invalid("needs FREQ (e.g. FREQ=MONTHLY;BYMONTHDAY=1)".into()))?;
        if !weekdays.is_empty() && frequency != Frequency::Weekly {
            return Err(invalid("BYDAY goes with FREQ=WEEKLY only".into()));
        }
        if !month_days.is_empty() && frequency != Frequency::Monthly {
            return Err(invalid("BYMONTHDAY goes with FREQ=MONTHLY only".into()));
        }
        weekdays.sort_by_key(|day| day.num_days_from_monday());
        month_days.sort_unstable();
        Ok(Repeat {
            frequency,
            interval: interval.unwrap_or(1),
            weekdays,
            month_days,
        })
    }

    /// The rule as stored and returned: `FREQ=…;INTERVAL=n` and the parts given.
    pub fn text(&self) -> String {
        let mut text = format!("FREQ={};INTERVAL={}", self.frequency.name(), self.interval);
        if !self.weekdays.is_empty() {
            let days: Vec<&str> = self
                .weekdays
                .iter()
                .filter_map(|day| WEEKDAYS.iter().find(|(_, d)| d == day).map(|(n, _)| *n))
                .collect();
            text.push_str(&format!(";BYDAY={}", days.join(",")));
        }
        if !self.month_days.is_empty() {
            let days: Vec<String> = self.month_days.iter().map(i32::to_string).collect();
            text.push_str(&format!(";BYMONTHDAY={}", days.join(",")));
        }
        text
    }

    /// The occurrence after `due`, of the same kind (a date, or a time in the same
    /// offset); an error naming `repeat` when the rule never occurs again.
    pub fn next(&self, due: &Due) -> Result<Due, StoreError> {
        let never = || {
            invalid(format!(
                "{} never occurs after the due date {}",
                quote(&self.text()),
                due.text()
            ))
        };
        let next = match due {
            Due::Day(day) => self.next_date(*day).map(Due::Day),
            Due::At(at) => {
                let local = at.naive_local();
                self.next_date(local.date())
                    .map(|day| NaiveDateTime::new(day, local.time()))
                    .and_then(|moment| at.offset().from_local_datetime(&moment).single())
                    .map(Due::At)
            }
        }
        .ok_or_else(never)?;
        // Stay within what a due date may be.
        Due::parse(FIELD, &next.text()).map_err(|_| never())
    }

    fn next_date(&self, after: NaiveDate) -> Option<NaiveDate> {
        match self.frequency {
            Frequency::Daily => after.checked_add_days(Days::new(u64::from(self.interval))),
            Frequency::Weekly => {
                let days = if self.weekdays.is_empty() {
                    vec![after.weekday()]
                } else {
                    self.weekdays.clone()
                };
                let monday = after.checked_sub_days(Days::new(u64::from(
                    after.weekday().num_days_from_monday(),
                )))?;
                (0..=1u64).find_map(|week| {
                    let start =
                        monday.checked_add_days(Days::new(7 * week * u64::from(self.interval)))?;
                    days.iter()
                        .filter_map(|day| {
                            start.checked_add_days(Days::new(u64::from(day.num_days_from_monday())))
                        })
                        .find(|date| *date > after)
                })
            }
            Frequency::Monthly => {
                let days = if self.month_days.is_empty() {
                    vec![after.day() as i32]
                } else {
                    self.month_days.clone()
                };
                let first = after.with_day(1)?;
                (0..SEARCH_PERIODS).find_map(|period| {
                    let month =
                        first.checked_add_months(chrono::Months::new(period * self.interval))?;
                    let mut dates: Vec<NaiveDate> = days
                        .iter()
                        .filter_map(|day| day_of_month(month, *day))
                        .filter(|date| *date > after)
                        .collect();
                    dates.sort_unstable();
                    dates.first().copied()
                })
            }
            Frequency::Yearly => (1..SEARCH_PERIODS).find_map(|period| {
                let year = after
                    .year()
                    .checked_add(i32::try_from(period * self.interval).ok()?)?;
                NaiveDate::from_ymd_opt(year, after.month(), after.day())
            }),
        }
    }
}

/// The `day`th day of `month` (a date in it); negative days count from its end.
fn day_of_month(month: NaiveDate, day: i32) -> Option<NaiveDate> {
    if day > 0 {
        return month.with_day(day as u32);
    }
    let next_month = month
        .with_day(1)?
        .checked_add_months(chrono::Months::new(1))?;
    let last = next_month.pred_opt()?.day() as i32;
    let n = last + 1 + day;
    (n >= 1).then(|| month.with_day(n as u32)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(rule: &str, due: &str) -> String {
        let due = Due::parse("due", due).unwrap();
        Repeat::parse(rule).unwrap().next(&due).unwrap().text()
    }

    #[test]
    fn rules_repeat_as_rfc_5545_reads_them() {
        assert_eq!(next("FREQ=DAILY", "2026-12-31"), "2027-01-01");
        assert_eq!(next("FREQ=DAILY;INTERVAL=3", "2026-12-30"), "2027-01-02");
        // Weekly on the due date's weekday (2026-12-01 is a Tuesday), or on given days.
        assert_eq!(next("FREQ=WEEKLY", "2026-12-01"), "2026-12-08");
        assert_eq!(next("FREQ=WEEKLY;BYDAY=TU,FR", "2026-12-01"), "2026-12-04");
        assert_eq!(next("FREQ=WEEKLY;BYDAY=TU,FR", "2026-12-04"), "2026-12-08");
        assert_eq!(
            next("rrule:freq=weekly;interval=2;byday=mo,fr", "2026-12-04"),
            "2026-12-14"
        );
        // Monthly: the 1st; the 31st skips short months; -1 is the last day.
        assert_eq!(
            next("FREQ=MONTHLY;BYMONTHDAY=1", "2026-12-01"),
            "2027-01-01"
        );
        assert_eq!(next("FREQ=MONTHLY", "2027-01-31"), "2027-03-31");
        assert_eq!(
            next("FREQ=MONTHLY;BYMONTHDAY=-1", "2027-01-31"),
            "2027-02-28"
        );
        assert_eq!(
            next("FREQ=MONTHLY;BYMONTHDAY=1,15", "2026-12-01"),
            "2026-12-15"
        );
        assert_eq!(next("FREQ=MONTHLY;INTERVAL=3", "2026-11-15"), "2027-02-15");
        // Yearly: February 29 in leap years only.
        assert_eq!(next("FREQ=YEARLY", "2028-02-29"), "2032-02-29");
        assert_eq!(next("FREQ=YEARLY;INTERVAL=2", "2026-07-04"), "2028-07-04");
        // A date-time keeps its local time and offset.
        assert_eq!(
            next("FREQ=WEEKLY", "2026-12-01T09:00:00+01:00"),
            "2026-12-08T09:00:00+01:00"
        );
        assert_eq!(
            Repeat::parse(" RRULE:FREQ=weekly;BYDAY=FR,MO;WKST=MO ")
                .unwrap()
                .text(),
            "FREQ=WEEKLY;INTERVAL=1;BYDAY=MO,FR"
        );
    }

    #[test]
    fn bad_rules_are_refused_by_name() {
        for (rule, says) in [
            ("", "needs FREQ"),
            ("FREQ=HOURLY", "FREQ=`HOURLY`"),
            ("FREQ=DAILY;COUNT=3", "`COUNT` is not supported"),
            ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
            ("FREQ=WEEKLY;BYDAY=XX", "BYDAY `XX`"),
            ("FREQ=WEEKLY;BYDAY=1MO", "BYDAY `1MO`"),
            ("FREQ=DAILY;BYDAY=MO", "with FREQ=WEEKLY only"),
            ("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY `32`"),
            ("FREQ", "NAME=VALUE"),
        ] {
            match Repeat::parse(rule) {
                Err(StoreError::Invalid {
                    field: "repeat",
                    reason,
                }) => {
                    assert!(reason.contains(says), "{rule}: {reason}")
                }
                other => panic!("{rule}: {other:?}"),
            }
        }
        let never = Repeat::parse("FREQ=YEARLY").unwrap();
        assert!(
            never
                .next(&Due::parse("due", "9998-06-01").unwrap())
                .is_err()
        );
    }
}
