//! Billing periods: which `[from, to)` of a subscription an instant falls in, for a plan's
//! interval, a billing anchor and the customer's time zone.
//!
//! # Rules
//! - Periods are half-open, `[from, to)` (semantics 1.3), and their boundaries are local
//!   midnights in the customer's IANA zone, returned as UTC instants. A period therefore lasts
//!   whole local days, whatever their length: a DST day of 23 or 25 hours is one day. Where a
//!   zone skips midnight (the clocks jump from 23:59 to 01:00), the day starts at the jump;
//!   where midnight happens twice, at the first one.
//! - `calendar` cycles start on calendar boundaries: weekly on Mondays (ISO 8601 weeks),
//!   monthly on the 1st, quarterly on January, April, July and October 1st, yearly on
//!   January 1st.
//! - `anniversary` cycles start on the local date the subscription started, repeated: the same
//!   weekday, the same day of the month (quarter, year). [`BillingAnchor::Date`] does the same
//!   from any date. A day that a month lacks is clamped to the month's last day, each month
//!   afresh: anchored on the 31st, cycles start Jan 31, Feb 28 (29 in a leap year), Mar 31,
//!   Apr 30. Yearly anchored on Feb 29 starts on Feb 28 in other years.
//! - A period never starts before the subscription: the first one runs from the start instant
//!   (a partial period under `calendar`, or when the start is not at local midnight). An end
//!   clips the last one: `to` is never after the end.
//! - An instant before the start, or at or after the end, has no period.

use chrono::{DateTime, Datelike, Days, LocalResult, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// How often a plan bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanInterval {
    Weekly,
    Monthly,
    Quarterly,
    Yearly,
}

impl PlanInterval {
    pub const ALL: [PlanInterval; 4] = [Self::Weekly, Self::Monthly, Self::Quarterly, Self::Yearly];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Quarterly => "quarterly",
            Self::Yearly => "yearly",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == text)
    }
}

/// Where billing cycles start (Lago's `billing_time`, plus an explicit date).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingAnchor {
    /// Calendar boundaries: Monday, the 1st, quarter starts, January 1st.
    Calendar,
    /// The subscription's start date (in the customer's zone), repeated.
    Anniversary,
    /// This date, repeated (same weekday, same day of the month, quarter or year).
    Date(NaiveDate),
}

/// What decides a subscription's billing periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingSchedule {
    pub interval: PlanInterval,
    pub anchor: BillingAnchor,
    /// The customer's zone: boundaries are its local midnights.
    pub timezone: Tz,
    pub started_at: DateTime<Utc>,
    /// When the subscription ends (terminated or scheduled to), if it does.
    pub ended_at: Option<DateTime<Utc>>,
}

/// One billing period, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingPeriod {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The whole cycle the period belongs to, before clipping to the subscription's start and
    /// end: what proration divides by. Equal to `from` and `to` for a full period.
    pub cycle_from: DateTime<Utc>,
    pub cycle_to: DateTime<Utc>,
}

impl BillingPeriod {
    /// Whether the subscription's start or end clipped the period.
    pub fn is_partial(&self) -> bool {
        self.from != self.cycle_from || self.to != self.cycle_to
    }
}

/// Why an instant has no billing period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingPeriodError {
    #[error("the subscription has not started at this instant")]
    NotStarted,
    #[error("the subscription has ended at this instant")]
    Ended,
    #[error("the subscription ends before it starts")]
    EndsBeforeStart,
    #[error("the date is outside the supported calendar")]
    OutOfRange,
}

impl BillingPeriodError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotStarted => "subscription_not_started",
            Self::Ended => "subscription_ended",
            Self::EndsBeforeStart => "invalid_subscription_dates",
            Self::OutOfRange => "out_of_range",
        }
    }
}

/// The billing period of `schedule` that contains `at`.
pub fn billing_period(
    schedule: &BillingSchedule,
    at: DateTime<Utc>,
) -> Result<BillingPeriod, BillingPeriodError> {
    if let Some(end) = schedule.ended_at {
        if end <= schedule.started_at {
            return Err(BillingPeriodError::EndsBeforeStart);
        }
        if at >= end {
            return Err(BillingPeriodError::Ended);
        }
    }
    if at < schedule.started_at {
        return Err(BillingPeriodError::NotStarted);
    }
    let tz = schedule.timezone;
    let cycle = Cycle::of(schedule);
    let today = at.with_timezone(&tz).date_naive();
    let (first_day, next_first_day) =
        cycle.dates_around(today).ok_or(BillingPeriodError::OutOfRange)?;
    let cycle_from = start_of_day(tz, first_day).ok_or(BillingPeriodError::OutOfRange)?;
    let cycle_to = start_of_day(tz, next_first_day).ok_or(BillingPeriodError::OutOfRange)?;
    Ok(BillingPeriod {
        from: cycle_from.max(schedule.started_at),
        to: schedule.ended_at.map_or(cycle_to, |end| cycle_to.min(end)),
        cycle_from,
        cycle_to,
    })
}

/// The first instant of local `date` in `tz`: its midnight; the first of two midnights when the
/// clocks go back over it; the moment the clocks jump when they skip it.
pub fn start_of_day(tz: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => {
            // The first instant whose local time is at or after midnight, to the second (zone
            // offsets are whole seconds). Offsets stay within -12h..+14h, so 30 hours either
            // side of midnight read as UTC bracket it.
            let guess = midnight.and_utc().timestamp();
            let (mut before, mut after) = (guess - 30 * 3600, guess + 30 * 3600);
            while after - before > 1 {
                let mid = before + (after - before) / 2;
                let local = DateTime::from_timestamp(mid, 0)?.with_timezone(&tz).naive_local();
                if local >= midnight {
                    after = mid;
                } else {
                    before = mid;
                }
            }
            DateTime::from_timestamp(after, 0)
        }
    }
}

/// Which local dates start a cycle.
#[derive(Debug, Clone, Copy)]
enum Cycle {
    /// Every 7 days, on this weekday (0 is Monday).
    Weeks { weekday: u32 },
    /// Every `step` months, in the months whose index (`year × 12 + month0`) is `residue`
    /// modulo `step`, on `day` (clamped to the month's last day).
    Months { step: i64, residue: i64, day: u32 },
}

impl Cycle {
    fn of(schedule: &BillingSchedule) -> Self {
        let anchor = match schedule.anchor {
            BillingAnchor::Calendar => None,
            BillingAnchor::Anniversary => {
                Some(schedule.started_at.with_timezone(&schedule.timezone).date_naive())
            }
            BillingAnchor::Date(date) => Some(date),
        };
        let step = match schedule.interval {
            PlanInterval::Weekly => {
                let weekday = anchor.map_or(0, |d| d.weekday().num_days_from_monday());
                return Cycle::Weeks { weekday };
            }
            PlanInterval::Monthly => 1,
            PlanInterval::Quarterly => 3,
            PlanInterval::Yearly => 12,
        };
        match anchor {
            None => Cycle::Months { step, residue: 0, day: 1 },
            Some(date) => {
                Cycle::Months { step, residue: month_index(date).rem_euclid(step), day: date.day() }
            }
        }
    }

    /// The first day of the cycle containing `date`, and of the next cycle.
    fn dates_around(self, date: NaiveDate) -> Option<(NaiveDate, NaiveDate)> {
        match self {
            Cycle::Weeks { weekday } => {
                let back = (i64::from(date.weekday().num_days_from_monday()) - i64::from(weekday))
                    .rem_euclid(7);
                let first = date.checked_sub_days(Days::new(u64::try_from(back).ok()?))?;
                Some((first, first.checked_add_days(Days::new(7))?))
            }
            Cycle::Months { step, residue, day } => {
                let month = month_index(date);
                let k = month - (month - residue).rem_euclid(step);
                let candidate = cycle_start(k, day)?;
                if candidate <= date {
                    Some((candidate, cycle_start(k + step, day)?))
                } else {
                    Some((cycle_start(k - step, day)?, candidate))
                }
            }
        }
    }
}

/// Months since year 0: `year × 12 + month0`.
fn month_index(date: NaiveDate) -> i64 {
    i64::from(date.year()) * 12 + i64::from(date.month0())
}

/// `day` of month `index`, clamped to the month's last day.
fn cycle_start(index: i64, day: u32) -> Option<NaiveDate> {
    let year = i32::try_from(index.div_euclid(12)).ok()?;
    let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let last_day = first.checked_add_months(Months::new(1))?.pred_opt()?.day();
    first.with_day(day.min(last_day))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn cycle_starts_clamp_to_the_last_day_of_each_month() {
        // Month index of January 2024 is 2024 × 12 + 0.
        let jan = 2024 * 12;
        assert_eq!(cycle_start(jan, 31), Some(date(2024, 1, 31)));
        assert_eq!(cycle_start(jan + 1, 31), Some(date(2024, 2, 29)));
        assert_eq!(cycle_start(jan + 13, 31), Some(date(2025, 2, 28)));
        assert_eq!(cycle_start(jan + 3, 31), Some(date(2024, 4, 30)));
    }

    #[test]
    fn weeks_go_back_to_the_anchor_weekday() {
        // 2024-03-14 is a Thursday; the Monday before is the 11th, the Friday before the 8th.
        let thursday = date(2024, 3, 14);
        let monday = Cycle::Weeks { weekday: 0 }.dates_around(thursday).unwrap();
        assert_eq!(monday, (date(2024, 3, 11), date(2024, 3, 18)));
        let friday = Cycle::Weeks { weekday: 4 }.dates_around(thursday).unwrap();
        assert_eq!(friday, (date(2024, 3, 8), date(2024, 3, 15)));
    }
}
