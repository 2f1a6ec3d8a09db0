//! Billing periods (issue 4): local-midnight boundaries in the customer's zone across DST,
//! calendar and anniversary anchors, month-end clamping, leap years, partial first and last
//! periods. Each test is named after the rule it pins; the UTC instants are worked out by hand
//! in comments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, LocalResult, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use odometer_core::billing_period::{
    billing_period, start_of_day, BillingAnchor, BillingPeriod, BillingPeriodError,
    BillingSchedule, PlanInterval,
};

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn date(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

fn schedule(
    interval: PlanInterval,
    anchor: BillingAnchor,
    zone: &str,
    start: &str,
) -> BillingSchedule {
    BillingSchedule { interval, anchor, timezone: tz(zone), started_at: t(start), ended_at: None }
}

fn period(schedule: &BillingSchedule, at: &str) -> BillingPeriod {
    billing_period(schedule, t(at)).unwrap()
}

/// `[from, to)` of the period containing `at`, as UTC RFC 3339 text.
fn bounds(schedule: &BillingSchedule, at: &str) -> (String, String) {
    let p = period(schedule, at);
    (text(p.from), text(p.to))
}

fn text(instant: DateTime<Utc>) -> String {
    instant.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn pair(from: &str, to: &str) -> (String, String) {
    (from.to_owned(), to.to_owned())
}

fn hours(p: &BillingPeriod) -> i64 {
    (p.to - p.from).num_hours()
}

use BillingAnchor::{Anniversary, Calendar};
use PlanInterval::{Monthly, Quarterly, Weekly, Yearly};

// ---------------------------------------------------------------------------------------------
// Local midnights across DST
// ---------------------------------------------------------------------------------------------

#[test]
fn monthly_calendar_periods_run_between_local_midnights_across_spring_forward_in_paris() {
    let s = schedule(Monthly, Calendar, "Europe/Paris", "2024-01-15T10:00:00Z");
    // March 1st 00:00 CET (+01) = Feb 29 23:00Z; April 1st 00:00 CEST (+02, since March 31st)
    // = March 31st 22:00Z. 31 days minus the hour lost: 743 hours.
    let p = period(&s, "2024-03-15T12:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2024-02-29T23:00:00Z", "2024-03-31T22:00:00Z"));
    assert_eq!(hours(&p), 31 * 24 - 1);
    assert!(!p.is_partial());
}

#[test]
fn weekly_calendar_periods_start_on_monday_and_keep_the_25_hour_day_in_paris() {
    let s = schedule(Weekly, Calendar, "Europe/Paris", "2024-01-01T00:00:00Z");
    // Sunday October 27th 2024 lasts 25 hours in Paris. Monday 21st 00:00 CEST (+02) = 20th
    // 22:00Z; Monday 28th 00:00 CET (+01) = 27th 23:00Z: 7 × 24 + 1 = 169 hours.
    let p = period(&s, "2024-10-27T12:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2024-10-20T22:00:00Z", "2024-10-27T23:00:00Z"));
    assert_eq!(hours(&p), 169);
    // The week of the 23-hour Sunday, March 31st: Monday 25th 00:00 CET = 24th 23:00Z to
    // Monday April 1st 00:00 CEST = March 31st 22:00Z: 167 hours.
    let p = period(&s, "2024-03-31T01:30:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2024-03-24T23:00:00Z", "2024-03-31T22:00:00Z"));
    assert_eq!(hours(&p), 167);
}

#[test]
fn monthly_calendar_periods_follow_new_york_dst_both_ways() {
    let s = schedule(Monthly, Calendar, "America/New_York", "2024-01-01T05:00:00Z");
    // March: the 1st 00:00 EST (-05) = 05:00Z; April 1st 00:00 EDT (-04) = 04:00Z. DST starts
    // March 10th: 31 × 24 - 1 = 743 hours.
    let march = period(&s, "2024-03-10T12:00:00Z");
    assert_eq!(
        (text(march.from), text(march.to)),
        pair("2024-03-01T05:00:00Z", "2024-04-01T04:00:00Z")
    );
    assert_eq!(hours(&march), 743);
    // November: the 1st 00:00 EDT = 04:00Z; December 1st 00:00 EST = 05:00Z. DST ends November
    // 3rd: 30 × 24 + 1 = 721 hours.
    let november = period(&s, "2024-11-03T06:30:00Z");
    assert_eq!(
        (text(november.from), text(november.to)),
        pair("2024-11-01T04:00:00Z", "2024-12-01T05:00:00Z")
    );
    assert_eq!(hours(&november), 721);
}

#[test]
fn an_instant_at_a_boundary_belongs_to_the_next_period() {
    let s = schedule(Monthly, Calendar, "America/New_York", "2024-01-01T05:00:00Z");
    // April 1st 00:00 EDT is 04:00Z: one second before is still March.
    assert_eq!(
        bounds(&s, "2024-04-01T03:59:59Z"),
        pair("2024-03-01T05:00:00Z", "2024-04-01T04:00:00Z")
    );
    assert_eq!(
        bounds(&s, "2024-04-01T04:00:00Z"),
        pair("2024-04-01T04:00:00Z", "2024-05-01T04:00:00Z")
    );
}

#[test]
fn a_skipped_midnight_starts_the_day_when_the_clocks_jump() {
    // São Paulo, November 4th 2018: 00:00 jumped to 01:00 (-03 -> -02), so the day starts at
    // 01:00 -02 = 03:00Z.
    let sao_paulo = tz("America/Sao_Paulo");
    let midnight = date("2018-11-04").and_hms_opt(0, 0, 0).unwrap();
    assert_eq!(sao_paulo.from_local_datetime(&midnight), LocalResult::None);
    assert_eq!(text(start_of_day(sao_paulo, date("2018-11-04")).unwrap()), "2018-11-04T03:00:00Z");
    // Weekly on that Sunday: to the next Sunday, 00:00 -02 = 02:00Z; a day of 23 hours makes
    // the week 167 hours.
    let s = BillingSchedule {
        interval: Weekly,
        anchor: BillingAnchor::Date(date("2018-11-04")),
        timezone: sao_paulo,
        started_at: t("2018-10-01T03:00:00Z"),
        ended_at: None,
    };
    let p = period(&s, "2018-11-05T12:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2018-11-04T03:00:00Z", "2018-11-11T02:00:00Z"));
    assert_eq!(hours(&p), 167);
}

#[test]
fn a_repeated_midnight_starts_the_day_at_the_first_one() {
    // Havana, November 5th 2023: 01:00 CDT (-04) went back to 00:00 CST (-05), so midnight
    // happened twice; the day starts at the first, 00:00 -04 = 04:00Z (not 05:00Z).
    assert_eq!(
        text(start_of_day(tz("America/Havana"), date("2023-11-05")).unwrap()),
        "2023-11-05T04:00:00Z"
    );
    // An ordinary day: 00:00 +01 in Paris in winter is 23:00Z the day before.
    assert_eq!(
        text(start_of_day(tz("Europe/Paris"), date("2024-01-10")).unwrap()),
        "2024-01-09T23:00:00Z"
    );
}

// ---------------------------------------------------------------------------------------------
// Anchors, clamping, leap years
// ---------------------------------------------------------------------------------------------

#[test]
fn first_calendar_period_is_partial_from_the_start() {
    let s = schedule(Monthly, Calendar, "Europe/Paris", "2024-01-15T10:00:00Z");
    // January in Paris: Dec 31st 23:00Z to Jan 31st 23:00Z; the subscription starts on the
    // 15th at 10:00Z, so the period runs from then.
    let p = period(&s, "2024-01-20T00:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2024-01-15T10:00:00Z", "2024-01-31T23:00:00Z"));
    assert_eq!(text(p.cycle_from), "2023-12-31T23:00:00Z");
    assert!(p.is_partial());
    // Before the start there is no period.
    assert_eq!(billing_period(&s, t("2024-01-15T09:59:59Z")), Err(BillingPeriodError::NotStarted));
}

#[test]
fn monthly_anniversary_on_the_31st_clamps_to_each_month_last_day() {
    let s = schedule(Monthly, Anniversary, "UTC", "2024-01-31T00:00:00Z");
    let cases = [
        // Jan 31 -> Feb 29 (2024 is a leap year) -> Mar 31 -> Apr 30 -> May 31.
        ("2024-02-15T00:00:00Z", "2024-01-31T00:00:00Z", "2024-02-29T00:00:00Z"),
        ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z"),
        ("2024-03-30T23:59:59Z", "2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z"),
        ("2024-04-30T00:00:00Z", "2024-04-30T00:00:00Z", "2024-05-31T00:00:00Z"),
        // Not a leap year: Feb 28, then back to Mar 31.
        ("2025-02-28T12:00:00Z", "2025-02-28T00:00:00Z", "2025-03-31T00:00:00Z"),
        ("2025-02-27T12:00:00Z", "2025-01-31T00:00:00Z", "2025-02-28T00:00:00Z"),
    ];
    for (at, from, to) in cases {
        assert_eq!(bounds(&s, at), pair(from, to), "at {at}");
    }
}

#[test]
fn anniversary_uses_the_start_date_in_the_customer_zone() {
    // 2024-01-30T23:30Z is January 31st 00:30 in Paris: the anchor is the 31st, and the first
    // period runs from the start instant. Feb 29 00:00 CET = Feb 28 23:00Z.
    let s = schedule(Monthly, Anniversary, "Europe/Paris", "2024-01-30T23:30:00Z");
    let first = period(&s, "2024-02-10T00:00:00Z");
    assert_eq!(
        (text(first.from), text(first.to)),
        pair("2024-01-30T23:30:00Z", "2024-02-28T23:00:00Z")
    );
    assert_eq!(text(first.cycle_from), "2024-01-30T23:00:00Z");
    // Then Feb 29 00:00 CET to Mar 31 00:00 CET (DST starts at 02:00 that day) = Mar 30 23:00Z.
    assert_eq!(
        bounds(&s, "2024-03-15T00:00:00Z"),
        pair("2024-02-28T23:00:00Z", "2024-03-30T23:00:00Z")
    );
}

#[test]
fn yearly_anniversary_on_february_29_falls_on_the_28th_in_other_years() {
    let s = schedule(Yearly, Anniversary, "UTC", "2024-02-29T00:00:00Z");
    let cases = [
        ("2025-02-27T23:59:59Z", "2024-02-29T00:00:00Z", "2025-02-28T00:00:00Z"),
        ("2025-06-01T00:00:00Z", "2025-02-28T00:00:00Z", "2026-02-28T00:00:00Z"),
        // 2028 is a leap year again: back on the 29th.
        ("2028-03-01T00:00:00Z", "2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"),
    ];
    for (at, from, to) in cases {
        assert_eq!(bounds(&s, at), pair(from, to), "at {at}");
    }
}

#[test]
fn yearly_calendar_periods_start_on_january_1st() {
    let s = schedule(Yearly, Calendar, "Europe/Paris", "2020-06-01T00:00:00Z");
    // January 1st 00:00 CET = December 31st 23:00Z; 2024 has 366 days.
    let p = period(&s, "2024-06-01T00:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2023-12-31T23:00:00Z", "2024-12-31T23:00:00Z"));
    assert_eq!(hours(&p), 366 * 24);
}

#[test]
fn quarterly_calendar_periods_start_on_quarter_starts() {
    let s = schedule(Quarterly, Calendar, "America/New_York", "2024-02-10T00:00:00Z");
    // First quarter, partial: from the start to April 1st 00:00 EDT = 04:00Z; the whole
    // quarter began January 1st 00:00 EST = 05:00Z.
    let first = period(&s, "2024-03-01T00:00:00Z");
    assert_eq!(
        (text(first.from), text(first.to)),
        pair("2024-02-10T00:00:00Z", "2024-04-01T04:00:00Z")
    );
    assert_eq!(text(first.cycle_from), "2024-01-01T05:00:00Z");
    assert_eq!(
        bounds(&s, "2024-05-05T00:00:00Z"),
        pair("2024-04-01T04:00:00Z", "2024-07-01T04:00:00Z")
    );
    // The fourth quarter crosses the end of DST: October 1st 00:00 EDT = 04:00Z to January
    // 1st 00:00 EST = 05:00Z.
    assert_eq!(
        bounds(&s, "2024-11-15T00:00:00Z"),
        pair("2024-10-01T04:00:00Z", "2025-01-01T05:00:00Z")
    );
}

#[test]
fn quarterly_anniversary_repeats_every_three_months_with_clamping() {
    let s = schedule(Quarterly, Anniversary, "UTC", "2024-01-31T00:00:00Z");
    // Jan 31 -> Apr 30 (clamped) -> Jul 31 -> Oct 31 -> Jan 31.
    assert_eq!(
        bounds(&s, "2024-05-01T00:00:00Z"),
        pair("2024-04-30T00:00:00Z", "2024-07-31T00:00:00Z")
    );
    assert_eq!(
        bounds(&s, "2025-01-30T00:00:00Z"),
        pair("2024-10-31T00:00:00Z", "2025-01-31T00:00:00Z")
    );
}

#[test]
fn weekly_anniversary_repeats_the_start_weekday() {
    // Wednesday May 1st 2024, 08:00 UTC. On Monday the 20th the period is Wednesday 15th to
    // Wednesday 22nd.
    let s = schedule(Weekly, Anniversary, "UTC", "2024-05-01T08:00:00Z");
    assert_eq!(
        bounds(&s, "2024-05-20T00:00:00Z"),
        pair("2024-05-15T00:00:00Z", "2024-05-22T00:00:00Z")
    );
    // The first week runs from the start instant to Wednesday the 8th.
    assert_eq!(
        bounds(&s, "2024-05-01T08:00:00Z"),
        pair("2024-05-01T08:00:00Z", "2024-05-08T00:00:00Z")
    );
}

#[test]
fn an_anchor_date_sets_the_cycle_and_the_first_period_is_partial() {
    // Cycles on the 15th; the subscription starts March 1st, so the first period is March 1st
    // to 15th, part of the cycle February 15th to March 15th.
    let s = BillingSchedule {
        interval: Monthly,
        anchor: BillingAnchor::Date(date("2024-01-15")),
        timezone: tz("UTC"),
        started_at: t("2024-03-01T00:00:00Z"),
        ended_at: None,
    };
    let p = period(&s, "2024-03-05T00:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2024-03-01T00:00:00Z", "2024-03-15T00:00:00Z"));
    assert_eq!(
        (text(p.cycle_from), text(p.cycle_to)),
        pair("2024-02-15T00:00:00Z", "2024-03-15T00:00:00Z")
    );
}

#[test]
fn the_subscription_end_clips_the_last_period() {
    let mut s = schedule(Monthly, Calendar, "UTC", "2024-01-01T00:00:00Z");
    s.ended_at = Some(t("2024-03-10T12:00:00Z"));
    let p = period(&s, "2024-03-05T00:00:00Z");
    assert_eq!((text(p.from), text(p.to)), pair("2024-03-01T00:00:00Z", "2024-03-10T12:00:00Z"));
    assert_eq!(text(p.cycle_to), "2024-04-01T00:00:00Z");
    assert_eq!(p.to - p.from, TimeDelta::hours(9 * 24 + 12));
    let ended = billing_period(&s, t("2024-03-10T12:00:00Z")).unwrap_err();
    assert_eq!((ended.clone(), ended.code()), (BillingPeriodError::Ended, "subscription_ended"));
    s.ended_at = Some(t("2024-01-01T00:00:00Z"));
    assert_eq!(
        billing_period(&s, t("2024-01-01T00:00:00Z")),
        Err(BillingPeriodError::EndsBeforeStart)
    );
}

#[test]
fn intervals_and_anchors_have_their_lago_names() {
    let names: Vec<&str> = PlanInterval::ALL.iter().map(|i| i.as_str()).collect();
    assert_eq!(names, ["weekly", "monthly", "quarterly", "yearly"]);
    assert_eq!(PlanInterval::parse("quarterly"), Some(Quarterly));
    assert_eq!(PlanInterval::parse("daily"), None);
    assert_eq!(serde_json::to_value(Anniversary).unwrap(), serde_json::json!("anniversary"));
    assert_eq!(
        serde_json::to_value(BillingAnchor::Date(date("2024-01-15"))).unwrap(),
        serde_json::json!({"date": "2024-01-15"})
    );
}
