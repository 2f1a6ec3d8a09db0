//! Cutting a period into windows (semantics 1.3 and 1.4): the calendar units of an IANA zone,
//! as UTC instants, clipped to the period.

use chrono::offset::LocalResult;
use chrono::{
    DateTime, Datelike, Days, FixedOffset, Months, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

use crate::usage::{UsageError, WindowSize};

/// One window, `[start, end)`, as UTC instants.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// The most windows one query may be cut into.
pub const MAX_WINDOWS: usize = 50_000;

/// No zone's offset is 26 hours or more from UTC, so a local time and the instant showing it
/// are less than this apart.
const OFFSET_BOUND_HOURS: i64 = 26;

/// The windows `[from, to)` is cut into (semantics 1.4), as UTC instants.
///
/// `none` is one window. Otherwise the first window starts at `from`, and each window ends at
/// the next boundary of the zone's calendar, or at `to`:
/// - The boundary after an instant is where the local clock first reaches the next unit start
///   (local time truncated to the minute, hour, day or month, plus one unit). A local time that
///   occurs twice (DST fall-back) is reached at its earlier occurrence that is still after the
///   window's start; one that does not occur (a spring-forward gap) is reached at the first
///   instant after the gap. So a day across DST lasts 23 or 25 hours, and a day whose midnight
///   is skipped starts when the clocks resume.
/// - Minute and hour windows also end where the zone's UTC offset changes, so the repeated hour
///   of a fall-back is two one-hour windows (not one of two hours) and minute windows stay one
///   minute long. Day and month windows never split at an offset change.
///
/// `from >= to` is [`UsageError::EmptyPeriod`]; more than [`MAX_WINDOWS`] windows is
/// [`UsageError::TooManyWindows`].
pub fn windows(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    size: WindowSize,
    tz: Tz,
) -> Result<Vec<Window>, UsageError> {
    if from >= to {
        return Err(UsageError::EmptyPeriod);
    }
    let unit = match size {
        WindowSize::None => return Ok(vec![(from, to)]),
        WindowSize::Minute => Unit::Minute,
        WindowSize::Hour => Unit::Hour,
        WindowSize::Day => Unit::Day,
        WindowSize::Month => Unit::Month,
    };
    let mut cuts = Vec::new();
    let mut start = from;
    while start < to {
        if cuts.len() == MAX_WINDOWS {
            return Err(UsageError::TooManyWindows { limit: MAX_WINDOWS });
        }
        // A boundary past the calendar's range (or, defensively, not after `start`) ends the
        // window at `to`, so the loop always moves forward.
        let end = next_boundary(start, unit, tz).filter(|b| *b > start && *b < to).unwrap_or(to);
        cuts.push((start, end));
        start = end;
    }
    Ok(cuts)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Minute,
    Hour,
    Day,
    Month,
}

/// The first boundary after `after` (see [`windows`]).
fn next_boundary(after: DateTime<Utc>, unit: Unit, tz: Tz) -> Option<DateTime<Utc>> {
    let target = add_unit(unit_start(local(after, tz), unit)?, unit)?;
    let reached = first_reaching(target, after, tz)?;
    match unit {
        Unit::Minute | Unit::Hour => Some(offset_change(after, reached, tz).unwrap_or(reached)),
        Unit::Day | Unit::Month => Some(reached),
    }
}

/// The local time `t` shows in `tz`.
fn local(t: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

/// The UTC offset in effect at `t`.
fn offset(t: DateTime<Utc>, tz: Tz) -> FixedOffset {
    tz.offset_from_utc_datetime(&t.naive_utc()).fix()
}

fn unit_start(t: NaiveDateTime, unit: Unit) -> Option<NaiveDateTime> {
    let date = t.date();
    match unit {
        Unit::Minute => date.and_hms_opt(t.hour(), t.minute(), 0),
        Unit::Hour => date.and_hms_opt(t.hour(), 0, 0),
        Unit::Day => date.and_hms_opt(0, 0, 0),
        Unit::Month => date.with_day(1)?.and_hms_opt(0, 0, 0),
    }
}

/// Local times have no DST, so adding a unit to one is plain calendar arithmetic.
fn add_unit(t: NaiveDateTime, unit: Unit) -> Option<NaiveDateTime> {
    match unit {
        Unit::Minute => t.checked_add_signed(TimeDelta::minutes(1)),
        Unit::Hour => t.checked_add_signed(TimeDelta::hours(1)),
        Unit::Day => t.checked_add_days(Days::new(1)),
        Unit::Month => t.checked_add_months(Months::new(1)),
    }
}

/// The first instant after `after` at which the local clock reaches `target` (which is later
/// than the local time of `after`).
fn first_reaching(target: NaiveDateTime, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&target) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)).filter(|t| *t > after),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            let (earlier, later) = if a <= b { (a, b) } else { (b, a) };
            [earlier, later].into_iter().find(|t| *t > after)
        }
        LocalResult::None => {
            // `target` falls in a gap: find the first instant whose local time is past it.
            // Within the bracket only this one transition moves the clock, so local time only
            // moves forward there and the search is sound.
            let bound = TimeDelta::hours(OFFSET_BOUND_HOURS);
            let as_utc = target.and_utc();
            let lo = after.max(as_utc.checked_sub_signed(bound)?);
            let hi = as_utc.checked_add_signed(bound)?;
            first_instant(lo, hi, |t| local(t, tz) >= target)
        }
    }
}

/// The first instant in `(after, before)` at which the UTC offset differs from the one at
/// `after`; `None` when it stays the same up to `before`. Used for minute and hour windows,
/// which span at most one transition.
fn offset_change(after: DateTime<Utc>, before: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    let start_offset = offset(after, tz);
    let last = before.checked_sub_signed(TimeDelta::microseconds(1))?;
    if last <= after || offset(last, tz) == start_offset {
        return None;
    }
    first_instant(after, last, |t| offset(t, tz) != start_offset)
}

/// The first instant in `(lo, hi]` for which `reached` holds, by bisection to the microsecond;
/// `reached` must be false at `lo`, true at `hi`, and change once in between.
fn first_instant(
    lo: DateTime<Utc>,
    hi: DateTime<Utc>,
    reached: impl Fn(DateTime<Utc>) -> bool,
) -> Option<DateTime<Utc>> {
    if reached(lo) || !reached(hi) {
        return None;
    }
    let (mut lo, mut hi) = (lo.timestamp_micros(), hi.timestamp_micros());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if reached(DateTime::from_timestamp_micros(mid)?) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp_micros(hi)
}
