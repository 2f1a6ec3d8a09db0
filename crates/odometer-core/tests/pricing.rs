//! Pricing (issue 4): charge models, the final rounding, charge filters and their validation.
//! Each test is named after the rule it pins and works its numbers out by hand in comments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use odometer_core::pricing::{
    bucket_of, minor_units, parse_charge_model, parse_charge_pricing, round_amount, BucketMatcher,
    ChargeInput, ChargeModel, ChargeModelKind, ChargePricing, PriceDetails, Priced, PricingError,
};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn d(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap()
}

fn model(doc: Value) -> ChargeModel {
    parse_charge_model(&doc).expect("expected a valid charge model")
}

/// Prices `units` (no per-event values, one event per unit when whole) in cents.
fn price_units(model: &ChargeModel, units: &str) -> Priced {
    model.price(&ChargeInput::new(d(units), 0), 2).unwrap()
}

/// The rounded amount of `units` under `model`, as text.
fn amount(model: &ChargeModel, units: &str) -> String {
    price_units(model, units).amount.to_string()
}

/// Prices per-event values (units are their sum) in cents.
fn price_events(model: &ChargeModel, values: &[&str]) -> Result<Priced, PricingError> {
    let input = ChargeInput::from_event_values(values.iter().map(|v| d(v)).collect()).unwrap();
    model.price(&input, 2)
}

/// `(path, code)` of every problem of a refused charge.
fn problems(doc: Value) -> Vec<(String, &'static str)> {
    let err = parse_charge_pricing(&doc).expect_err("expected the charge to be refused");
    err.iter().map(|p| (p.path.clone(), p.code)).collect()
}

fn p(path: &str, code: &'static str) -> (String, &'static str) {
    (path.to_owned(), code)
}

fn props(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// Three tiers in Lago's integer notation: 0-100 at 1 + flat 10, 101-200 at 0.5 + flat 5,
/// 201 and up at 0.25 + flat 2.
fn three_tiers() -> Value {
    json!([
        {"from_value": 0, "to_value": 100, "per_unit_amount": "1", "flat_amount": "10"},
        {"from_value": 101, "to_value": 200, "per_unit_amount": "0.5", "flat_amount": "5"},
        {"from_value": 201, "to_value": null, "per_unit_amount": "0.25", "flat_amount": "2"}
    ])
}

fn graduated() -> ChargeModel {
    model(json!({"charge_model": "graduated", "properties": {"graduated_ranges": three_tiers()}}))
}

fn volume() -> ChargeModel {
    model(json!({"charge_model": "volume", "properties": {"volume_ranges": three_tiers()}}))
}

fn percentage(properties: Value) -> ChargeModel {
    model(json!({"charge_model": "percentage", "properties": properties}))
}

// ---------------------------------------------------------------------------------------------
// Standard and the final rounding
// ---------------------------------------------------------------------------------------------

#[test]
fn standard_multiplies_units_by_the_unit_amount() {
    let m = model(json!({"charge_model": "standard", "properties": {"amount": "0.25"}}));
    // 1234.5 × 0.25 = 308.625, rounded half-up to cents: 308.63.
    let priced = price_units(&m, "1234.5");
    assert_eq!(priced.unrounded_amount, d("308.625"));
    assert_eq!(priced.amount, d("308.63"));
    assert_eq!(priced.details, PriceDetails::Standard);
    // 0 units cost 0.
    assert_eq!(amount(&m, "0"), "0");
}

#[test]
fn standard_prices_negative_units_as_a_credit() {
    let m = model(json!({"charge_model": "standard", "properties": {"amount": "1.5"}}));
    // -10 × 1.5 = -15.
    assert_eq!(price_units(&m, "-10").amount, d("-15"));
}

#[test]
fn final_amount_rounds_half_up_to_the_currency_minor_unit() {
    let per_unit =
        |amount: &str| model(json!({"charge_model": "standard", "properties": {"amount": amount}}));
    let one = ChargeInput::new(Decimal::ONE, 1);
    // 1 × 0.125 = 0.125 -> 0.13 (the half goes up); 0.124 -> 0.12; 0.135 -> 0.14 (not to even).
    assert_eq!(per_unit("0.125").price(&one, 2).unwrap().amount, d("0.13"));
    assert_eq!(per_unit("0.124").price(&one, 2).unwrap().amount, d("0.12"));
    assert_eq!(per_unit("0.135").price(&one, 2).unwrap().amount, d("0.14"));
    // Half away from zero for credits: -1 × 0.125 = -0.125 -> -0.13.
    let minus_one = ChargeInput::new(-Decimal::ONE, 1);
    assert_eq!(per_unit("0.125").price(&minus_one, 2).unwrap().amount, d("-0.13"));
    // JPY has no minor unit: 3 × 0.5 = 1.5 -> 2; 3 × 0.83 = 2.49 -> 2.
    let three = ChargeInput::new(d("3"), 3);
    let jpy = minor_units("JPY");
    assert_eq!(jpy, 0);
    assert_eq!(per_unit("0.5").price(&three, jpy).unwrap().amount, d("2"));
    assert_eq!(per_unit("0.83").price(&three, jpy).unwrap().amount, d("2"));
    // KWD has three places: 1 × 1.0005 = 1.0005 -> 1.001.
    assert_eq!(per_unit("1.0005").price(&one, minor_units("KWD")).unwrap().amount, d("1.001"));
    assert_eq!(minor_units("USD"), 2);
    assert_eq!(minor_units("eur"), 2);
    assert_eq!(round_amount(d("2.5"), 0), d("3"));
}

#[test]
fn rounding_applies_once_to_the_total_not_per_tier() {
    // Two tiers of 0.005 per unit: 2 units are 1 × 0.005 + 1 × 0.005 = 0.010 -> 0.01. Rounding
    // each tier first would give 0.01 + 0.01 = 0.02.
    let m = model(json!({"charge_model": "graduated", "properties": {"graduated_ranges": [
        {"from_value": 0, "to_value": 1, "per_unit_amount": "0.005"},
        {"from_value": 1, "to_value": null, "per_unit_amount": "0.005"}
    ]}}));
    let priced = price_units(&m, "2");
    assert_eq!(priced.unrounded_amount, d("0.010"));
    assert_eq!(priced.amount, d("0.01"));
}

// ---------------------------------------------------------------------------------------------
// Graduated
// ---------------------------------------------------------------------------------------------

#[test]
fn graduated_prices_each_tier_and_adds_the_flat_amount_of_every_tier_reached() {
    let m = graduated();
    let cases = [
        // No units: nothing at all, not even the first flat amount.
        ("0", "0"),
        // 1 unit: 1 × 1 + 10 = 11.
        ("1", "11"),
        // Exactly at the first edge: 100 × 1 + 10 = 110; the second tier is not reached.
        ("100", "110"),
        // One above: 110 + (1 × 0.5 + 5) = 115.5.
        ("101", "115.5"),
        // Between Lago's integer tiers: 110 + (0.5 × 0.5 + 5) = 115.25.
        ("100.5", "115.25"),
        // Exactly at the second edge: 110 + (100 × 0.5 + 5) = 165.
        ("200", "165"),
        // One above: 165 + (1 × 0.25 + 2) = 167.25.
        ("201", "167.25"),
        // 165 + (50.5 × 0.25 + 2) = 165 + 14.625 = 179.625 -> 179.63.
        ("250.5", "179.63"),
        // Negative units are priced as 0.
        ("-5", "0"),
    ];
    for (units, expected) in cases {
        assert_eq!(price_units(&m, units).amount, d(expected), "{units} units");
    }
}

#[test]
fn graduated_breakdown_lists_each_tier_reached() {
    let priced = price_units(&graduated(), "101");
    let PriceDetails::Tiers { tiers } = priced.details else { panic!("expected tiers") };
    let rows: Vec<(usize, Decimal, Decimal)> =
        tiers.iter().map(|t| (t.index, t.units, t.amount)).collect();
    // Tier 0: 100 units, 100 × 1 + 10 = 110; tier 1: 1 unit, 1 × 0.5 + 5 = 5.5.
    assert_eq!(rows, [(0, d("100"), d("110")), (1, d("1"), d("5.5"))]);
    assert_eq!(tiers[1].to_value, Some(d("200")));
}

#[test]
fn graduated_continuous_notation_prices_like_lago_notation() {
    // from_value = previous to_value: the same tiers (each includes its to_value).
    let m = model(json!({"charge_model": "graduated", "properties": {"graduated_ranges": [
        {"from_value": 0, "to_value": 100, "per_unit_amount": "1", "flat_amount": "10"},
        {"from_value": 100, "to_value": 200, "per_unit_amount": "0.5", "flat_amount": "5"},
        {"from_value": 200, "to_value": null, "per_unit_amount": "0.25", "flat_amount": "2"}
    ]}}));
    for (units, expected) in [("100", "110"), ("101", "115.5"), ("201", "167.25")] {
        assert_eq!(amount(&m, units), expected, "{units} units");
    }
}

// ---------------------------------------------------------------------------------------------
// Volume
// ---------------------------------------------------------------------------------------------

#[test]
fn volume_prices_all_units_at_the_tier_reached_plus_its_flat_amount() {
    let m = volume();
    let cases = [
        ("0", "0"),
        // 1 × 1 + 10 = 11.
        ("1", "11"),
        // Exactly at the first edge: 100 × 1 + 10 = 110.
        ("100", "110"),
        // One above: all 101 units at 0.5, + 5 = 55.5 (cheaper than 100 units).
        ("101", "55.5"),
        // 100.5 × 0.5 + 5 = 55.25.
        ("100.5", "55.25"),
        // 200 × 0.5 + 5 = 105.
        ("200", "105"),
        // 201 × 0.25 + 2 = 52.25.
        ("201", "52.25"),
        // 1000.02 × 0.25 + 2 = 252.005 -> 252.01.
        ("1000.02", "252.01"),
        ("-3", "0"),
    ];
    for (units, expected) in cases {
        assert_eq!(price_units(&m, units).amount, d(expected), "{units} units");
    }
    let PriceDetails::Tiers { tiers } = price_units(&m, "101").details else { panic!() };
    assert_eq!(tiers.len(), 1);
    assert_eq!((tiers[0].index, tiers[0].units), (1, d("101")));
}

// ---------------------------------------------------------------------------------------------
// Package
// ---------------------------------------------------------------------------------------------

#[test]
fn package_counts_every_started_package() {
    let m = model(json!({"charge_model": "package",
        "properties": {"amount": "10", "package_size": 100, "free_units": 0}}));
    let cases = [
        // ceil(201 / 100) = 3 packages × 10 = 30.
        ("201", "30"),
        // Exactly 2 packages: 20.
        ("200", "20"),
        // A package counts from its first unit: ceil(1 / 100) = 1 -> 10.
        ("1", "10"),
        // ceil(100.5 / 100) = 2 -> 20.
        ("100.5", "20"),
        ("0", "0"),
        ("-7", "0"),
    ];
    for (units, expected) in cases {
        assert_eq!(amount(&m, units), expected, "{units} units");
    }
    let priced = price_units(&m, "201");
    assert_eq!(priced.details, PriceDetails::Package { paid_units: d("201"), packages: d("3") });
}

#[test]
fn package_free_units_come_before_the_first_package() {
    let m = model(json!({"charge_model": "package",
        "properties": {"amount": "4.5", "package_size": 3, "free_units": 50}}));
    let cases = [
        // At or below the free units: nothing.
        ("30", "0"),
        ("50", "0"),
        // 51 - 50 = 1 unit: 1 package × 4.5.
        ("51", "4.5"),
        // 60 - 50 = 10 units: ceil(10 / 3) = 4 packages × 4.5 = 18.
        ("60", "18"),
        // 59 - 50 = 9 units: exactly 3 packages = 13.5.
        ("59", "13.5"),
    ];
    for (units, expected) in cases {
        assert_eq!(price_units(&m, units).amount, d(expected), "{units} units");
    }
}

// ---------------------------------------------------------------------------------------------
// Percentage
// ---------------------------------------------------------------------------------------------

#[test]
fn percentage_applies_the_rate_to_the_total_and_the_fixed_fee_per_event() {
    let m = percentage(json!({"rate": "1.2", "fixed_amount": "0.10"}));
    // 1000 × 1.2 % = 12, + 4 events × 0.10 = 0.40 -> 12.40.
    let priced = m.price(&ChargeInput::new(d("1000"), 4), 2).unwrap();
    assert_eq!(priced.amount, d("12.4"));
    // 33.33 × 1.2 % = 0.39996, + 1 × 0.10 = 0.49996 -> 0.50.
    let priced = m.price(&ChargeInput::new(d("33.33"), 1), 2).unwrap();
    assert_eq!(priced.unrounded_amount, d("0.49996"));
    assert_eq!(priced.amount, d("0.50"));
}

#[test]
fn percentage_of_a_negative_total_is_nothing_but_fixed_fees() {
    let m = percentage(json!({"rate": "10", "fixed_amount": "1"}));
    // max(0, -50) × 10 % = 0, + 2 events × 1 = 2.
    assert_eq!(m.price(&ChargeInput::new(d("-50"), 2), 2).unwrap().amount, d("2"));
}

#[test]
fn percentage_free_events_pay_neither_rate_nor_fixed_fee() {
    let m = percentage(json!({"rate": "2", "fixed_amount": "1", "free_units_per_events": 2}));
    // The first 2 events (100 + 200 = 300) are free. (1000 - 300) × 2 % = 14, + 2 paying
    // events × 1 = 16.
    let priced = price_events(&m, &["100", "200", "300", "400"]).unwrap();
    assert_eq!(priced.amount, d("16"));
    assert_eq!(
        priced.details,
        PriceDetails::Percentage {
            free_events: 2,
            free_units: d("300"),
            rate_amount: d("14"),
            fixed_amount: d("2"),
            per_transaction: false,
        }
    );
}

#[test]
fn percentage_free_amount_covers_the_first_units_and_the_events_within_it() {
    let m = percentage(
        json!({"rate": "2", "fixed_amount": "1", "free_units_per_total_aggregation": "250"}),
    );
    // 100 (150 left) and 100 (50 left) are free; the third event pays on 100 - 50 = 50 and pays
    // its fixed fee; the allowance is over. (400 - 250) × 2 % = 3, + 2 × 1 = 5.
    let priced = price_events(&m, &["100", "100", "100", "100"]).unwrap();
    assert_eq!(priced.amount, d("5"));
    let PriceDetails::Percentage { free_events, free_units, .. } = priced.details else { panic!() };
    assert_eq!((free_events, free_units), (2, d("250")));
}

#[test]
fn percentage_event_landing_exactly_on_the_free_amount_is_free() {
    let m = percentage(
        json!({"rate": "2", "fixed_amount": "1", "free_units_per_total_aggregation": "200"}),
    );
    // 100 (100 left), then 100 fits exactly (0 left): both free. The third pays:
    // (300 - 200) × 2 % = 2, + 1 × 1 = 3.
    assert_eq!(price_events(&m, &["100", "100", "100"]).unwrap().amount, d("3"));
}

#[test]
fn percentage_free_units_end_with_whichever_allowance_runs_out_first() {
    // Amount first (Lago's own example: 3 events or 250): 50 and 100 are free (100 left); 250
    // goes past it: 100 free, 150 paid, fixed fee paid. (800 - 250) × 10 % = 55, + 2 × 2 = 4
    // -> 59.
    let m = percentage(json!({"rate": "10", "fixed_amount": "2",
        "free_units_per_events": 3, "free_units_per_total_aggregation": "250"}));
    assert_eq!(price_events(&m, &["50", "100", "250", "400"]).unwrap().amount, d("59"));
    // Events first: 2 free events (10 + 10) though 980 of the amount is left.
    // (40 - 20) × 10 % = 2, + 2 × 1 = 2 -> 4.
    let m = percentage(json!({"rate": "10", "fixed_amount": "1",
        "free_units_per_events": 2, "free_units_per_total_aggregation": "1000"}));
    assert_eq!(price_events(&m, &["10", "10", "10", "10"]).unwrap().amount, d("4"));
}

#[test]
fn percentage_per_transaction_bounds_clamp_each_event() {
    let m = percentage(json!({"rate": "1", "fixed_amount": "0.25",
        "per_transaction_min_amount": "0.5", "per_transaction_max_amount": "3"}));
    // 10: 0.10 + 0.25 = 0.35 -> min 0.5; 100: 1 + 0.25 = 1.25; 500: 5 + 0.25 = 5.25 -> max 3.
    // 0.5 + 1.25 + 3 = 4.75.
    let priced = price_events(&m, &["10", "100", "500"]).unwrap();
    assert_eq!(priced.amount, d("4.75"));
    let PriceDetails::Percentage { rate_amount, fixed_amount, per_transaction, .. } =
        priced.details
    else {
        panic!()
    };
    // Before the bounds: 0.1 + 1 + 5 = 6.1 of rate, 3 × 0.25 = 0.75 of fixed fees.
    assert_eq!((rate_amount, fixed_amount, per_transaction), (d("6.1"), d("0.75"), true));
}

#[test]
fn percentage_per_transaction_bounds_skip_free_events() {
    let m = percentage(json!({"rate": "1", "fixed_amount": "0.25",
        "free_units_per_total_aggregation": "50",
        "per_transaction_min_amount": "0.5", "per_transaction_max_amount": "3"}));
    // 30 is free (20 left): 0, not raised to the minimum. 40 pays on 40 - 20 = 20:
    // 0.2 + 0.25 = 0.45 -> min 0.5. 500: 5 + 0.25 = 5.25 -> max 3. 0 + 0.5 + 3 = 3.5.
    assert_eq!(price_events(&m, &["30", "40", "500"]).unwrap().amount, d("3.5"));
}

#[test]
fn percentage_negative_event_values_count_as_zero() {
    // Bounded: -20 pays 0 × 10 % + 1 = 1 -> min 1.5; 30 pays 3 + 1 = 4. 1.5 + 4 = 5.5.
    let m =
        percentage(json!({"rate": "10", "fixed_amount": "1", "per_transaction_min_amount": "1.5"}));
    assert_eq!(price_events(&m, &["-20", "30"]).unwrap().amount, d("5.5"));
    // Free amount 10: -5 uses none of it but is free; 20 goes past it (10 free, 10 paid).
    // Units -5 + 20 = 15: (15 - 10) × 10 % = 0.5, + 1 paying event × 1 = 1.5.
    let m = percentage(
        json!({"rate": "10", "fixed_amount": "1", "free_units_per_total_aggregation": "10"}),
    );
    let priced = price_events(&m, &["-5", "20"]).unwrap();
    assert_eq!(priced.amount, d("1.5"));
    let PriceDetails::Percentage { free_events, free_units, .. } = priced.details else { panic!() };
    assert_eq!((free_events, free_units), (1, d("10")));
}

#[test]
fn percentage_needs_per_event_values_for_free_units_and_bounds() {
    let free = percentage(json!({"rate": "1", "free_units_per_events": 1}));
    let err = free.price(&ChargeInput::new(d("10"), 2), 2).unwrap_err();
    assert_eq!(err, PricingError::EventValuesRequired);
    assert_eq!(err.code(), "event_values_required");
    let bounded = percentage(json!({"rate": "1", "per_transaction_max_amount": "1"}));
    assert_eq!(
        bounded.price(&ChargeInput::new(d("10"), 2), 2),
        Err(PricingError::EventValuesRequired)
    );
    // Values must match the count: 1 value for 2 events.
    let input = ChargeInput { units: d("10"), events_count: 2, event_values: Some(vec![d("10")]) };
    assert_eq!(
        free.price(&input, 2),
        Err(PricingError::EventCountMismatch { values: 1, events: 2 })
    );
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    let m = model(json!({"charge_model": "standard", "properties": {"amount": "1000000"}}));
    let huge = ChargeInput::new(Decimal::MAX, 1);
    assert_eq!(m.price(&huge, 2), Err(PricingError::Overflow));
}

// ---------------------------------------------------------------------------------------------
// Charge filters
// ---------------------------------------------------------------------------------------------

fn filtered_charge() -> ChargePricing {
    parse_charge_pricing(&json!({
        "charge_model": "standard", "properties": {"amount": "1"},
        "filters": [
            {"values": {"region": ["eu", "us"]}, "properties": {"amount": "2"}},
            {"values": {"region": ["eu"], "tier": ["gold"]}, "properties": {"amount": "5"}},
            {"values": {"tier": ["gold", "silver"]}, "properties": {"amount": "3"}},
            {"values": {"region": ["eu"]}, "properties": {"amount": "4"}}
        ]
    }))
    .unwrap()
}

#[test]
fn an_event_counts_in_the_most_specific_matching_filter() {
    let charge = filtered_charge();
    let matcher = BucketMatcher::new(&charge.filters);
    let cases = [
        // Filters 0, 1, 2 and 3 match; 1 matches two keys.
        (json!({"region": "eu", "tier": "gold"}), Some(1)),
        // 0 and 3 match one key each: the first declared wins.
        (json!({"region": "eu", "tier": "bronze"}), Some(0)),
        // 0 (region) and 2 (tier) match one key each: 0 was declared first.
        (json!({"region": "us", "tier": "silver"}), Some(0)),
        (json!({"tier": "silver"}), Some(2)),
        // No filter matches: the default bucket.
        (json!({"region": "apac"}), None),
        (json!({"region": "EU"}), None),
        (json!({"region": null, "tier": "bronze"}), None),
        (json!({}), None),
    ];
    for (properties, expected) in cases {
        let properties = props(properties);
        assert_eq!(matcher.bucket_of(&properties), expected, "{properties:?}");
        assert_eq!(bucket_of(&charge.filters, &properties), expected);
    }
}

#[test]
fn filter_values_compare_as_canonical_text_and_keys_as_property_paths() {
    let charge = parse_charge_pricing(&json!({
        "charge_model": "standard", "properties": {"amount": "1"},
        "filters": [
            {"values": {"plan": ["1"]}, "properties": {"amount": "2"}},
            {"values": {"meta.region": ["eu"], "beta": ["true"]}, "properties": {"amount": "3"}}
        ]
    }))
    .unwrap();
    let bucket = |v: Value| bucket_of(&charge.filters, &props(v));
    assert_eq!(bucket(json!({"plan": 1})), Some(0));
    assert_eq!(bucket(json!({"plan": "1"})), Some(0));
    assert_eq!(bucket(json!({"plan": 1.0})), Some(0));
    assert_eq!(bucket(json!({"plan": 2})), None);
    assert_eq!(bucket(json!({"plan": [1]})), None);
    assert_eq!(bucket(json!({"meta": {"region": "eu"}, "beta": true})), Some(1));
    assert_eq!(bucket(json!({"meta": {"region": "eu"}, "beta": false})), None);
}

#[test]
fn each_bucket_is_priced_by_its_own_properties() {
    let charge = filtered_charge();
    let matcher = BucketMatcher::new(&charge.filters);
    let events = [
        (json!({"region": "eu", "tier": "gold"}), "10"), // bucket 1 at 5
        (json!({"region": "eu"}), "3"),                  // bucket 0 at 2
        (json!({"region": "us", "tier": "gold"}), "4"),  // bucket 0 at 2
        (json!({"tier": "gold"}), "1"),                  // bucket 2 at 3
        (json!({"region": "apac"}), "7"),                // default at 1
    ];
    // Units per bucket: default 7, [0] 3 + 4 = 7, [1] 10, [2] 1, [3] 0.
    let mut units = vec![Decimal::ZERO; charge.filters.len() + 1];
    for (properties, value) in events {
        let slot = matcher.bucket_of(&props(properties)).map_or(0, |i| i + 1);
        units[slot] += d(value);
    }
    let amounts: Vec<Decimal> = std::iter::once(None)
        .chain((0..charge.filters.len()).map(Some))
        .zip(&units)
        .map(|(bucket, units)| {
            let model = charge.model_of(bucket).unwrap();
            model.price(&ChargeInput::new(*units, 0), 2).unwrap().amount
        })
        .collect();
    // default 7 × 1 = 7; [0] 7 × 2 = 14; [1] 10 × 5 = 50; [2] 1 × 3 = 3; [3] 0 × 4 = 0.
    assert_eq!(amounts, [d("7"), d("14"), d("50"), d("3"), d("0")]);
    assert!(charge.model_of(Some(4)).is_none());
}

// ---------------------------------------------------------------------------------------------
// Canonical JSON and validation
// ---------------------------------------------------------------------------------------------

#[test]
fn charges_round_trip_through_canonical_json() {
    let input = json!({
        "charge_model": "percentage",
        "properties": {"rate": 1.5, "fixed_amount": "0.30", "free_units_per_events": 3,
            "free_units_per_total_aggregation": "500", "per_transaction_min_amount": "0.1",
            "per_transaction_max_amount": "10"},
        "filters": [{"values": {"method": ["card", "sepa"]}, "invoice_display_name": "Cards",
            "properties": {"rate": "2.9"}}]
    });
    let charge = parse_charge_pricing(&input).unwrap();
    let canonical = serde_json::to_value(&charge).unwrap();
    // Decimals are written as normalized strings.
    assert_eq!(
        canonical,
        json!({
            "charge_model": "percentage",
            "properties": {"rate": "1.5", "fixed_amount": "0.3", "free_units_per_events": 3,
                "free_units_per_total_aggregation": "500", "per_transaction_min_amount": "0.1",
                "per_transaction_max_amount": "10"},
            "filters": [{"values": {"method": ["card", "sepa"]}, "properties": {"rate": "2.9"},
                "invoice_display_name": "Cards"}]
        })
    );
    let back: ChargePricing = serde_json::from_value(canonical.clone()).unwrap();
    assert_eq!(back, charge);
    // The canonical form is itself valid input.
    assert_eq!(parse_charge_pricing(&canonical).unwrap(), charge);

    for doc in [
        json!({"charge_model": "standard", "properties": {"amount": "0.01"}}),
        json!({"charge_model": "graduated", "properties": {"graduated_ranges": three_tiers()}}),
        json!({"charge_model": "volume", "properties": {"volume_ranges": three_tiers()}}),
        json!({"charge_model": "package",
            "properties": {"amount": "5", "package_size": 1000, "free_units": 10}}),
    ] {
        let m = parse_charge_model(&doc).unwrap();
        let text = serde_json::to_string(&m).unwrap();
        let back: ChargeModel = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m, "{text}");
        assert_eq!(
            m.kind(),
            ChargeModelKind::parse(doc["charge_model"].as_str().unwrap()).unwrap()
        );
    }
}

#[test]
fn tier_ranges_must_start_at_0_follow_without_gaps_and_end_open() {
    let ranges = |ranges: Value| {
        problems(json!({"charge_model": "graduated", "properties": {"graduated_ranges": ranges}}))
    };
    let base = "properties.graduated_ranges";
    // Starts at 1; a gap after 100 (102 is neither 100 nor 101); the last has a to_value.
    assert_eq!(
        ranges(json!([
            {"from_value": 1, "to_value": 100, "per_unit_amount": "1"},
            {"from_value": 102, "to_value": 200, "per_unit_amount": "1"},
            {"from_value": 201, "to_value": 300, "per_unit_amount": "1"}
        ])),
        [
            p(&format!("{base}[0].from_value"), "invalid_range"),
            p(&format!("{base}[1].from_value"), "invalid_range"),
            p(&format!("{base}[2].to_value"), "invalid_range"),
        ]
    );
    // An overlap (from 50 after to 100), an open middle range, to_value not above from_value.
    assert_eq!(
        ranges(json!([
            {"from_value": 0, "to_value": 100, "per_unit_amount": "1"},
            {"from_value": 50, "to_value": 40, "per_unit_amount": "1"},
            {"from_value": 41, "per_unit_amount": "1"},
            {"from_value": 41, "to_value": null, "per_unit_amount": "1"}
        ])),
        [
            p(&format!("{base}[1].from_value"), "invalid_range"),
            p(&format!("{base}[1].to_value"), "invalid_range"),
            p(&format!("{base}[2].to_value"), "missing_field"),
        ]
    );
    // Amounts: missing per-unit amount, negative flat amount, a word, an unknown member.
    assert_eq!(
        ranges(json!([
            {"from_value": 0, "to_value": 10, "flat_amount": "-1"},
            {"from_value": 10, "to_value": null, "per_unit_amount": "cheap", "price": 1}
        ])),
        [
            p(&format!("{base}[0].per_unit_amount"), "missing_field"),
            p(&format!("{base}[0].flat_amount"), "invalid_value"),
            p(&format!("{base}[1].per_unit_amount"), "invalid_value"),
            p(&format!("{base}[1].price"), "unknown_field"),
        ]
    );
    assert_eq!(ranges(json!([])), [p(base, "invalid_value")]);
    assert_eq!(
        problems(json!({"charge_model": "volume", "properties": {}})),
        [p("properties.volume_ranges", "missing_field")]
    );
}

#[test]
fn model_properties_are_checked_member_by_member() {
    assert_eq!(
        problems(json!({"charge_model": "package",
            "properties": {"amount": "-1", "package_size": 0, "free_units": 1.5}})),
        [
            p("properties.amount", "invalid_value"),
            p("properties.package_size", "invalid_value"),
            p("properties.free_units", "invalid_value"),
        ]
    );
    assert_eq!(
        problems(json!({"charge_model": "package", "properties": {"amount": "1"}})),
        [p("properties.package_size", "missing_field")]
    );
    assert_eq!(
        problems(json!({"charge_model": "percentage", "properties": {
            "fixed_amount": "0.1", "free_units_per_events": 0,
            "free_units_per_total_aggregation": "0",
            "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"}})),
        [
            p("properties.rate", "missing_field"),
            p("properties.free_units_per_events", "invalid_value"),
            p("properties.free_units_per_total_aggregation", "invalid_value"),
            p("properties.per_transaction_max_amount", "invalid_value"),
        ]
    );
    assert_eq!(
        problems(
            json!({"charge_model": "standard", "properties": {"amount": "1", "grouped_by": []}})
        ),
        [p("properties.grouped_by", "unknown_field")]
    );
    assert_eq!(
        problems(json!({"charge_model": "dynamic", "properties": {}})),
        [p("charge_model", "unknown_charge_model")]
    );
    assert_eq!(
        problems(json!({"charge_model": "standard", "extra": 1})),
        [p("properties", "missing_field"), p("extra", "unknown_field")]
    );
    assert_eq!(problems(json!([])), [p("", "invalid_type")]);
}

#[test]
fn charge_filters_are_checked_with_their_paths() {
    assert_eq!(
        problems(json!({
            "charge_model": "standard", "properties": {"amount": "1"},
            "filters": [
                {"values": {}, "properties": {"amount": "1"}},
                {"values": {"region": []}, "properties": {"amount": "x"}},
                {"values": {"region": ["eu", "eu"], "tier": "gold"}},
                {"values": {"region": ["__ALL_FILTER_VALUES__"]}, "properties": {"amount": "1"}},
                {"values": {"region": ["eu", "us"]}, "properties": {"amount": "1"}},
                {"values": {"region": ["us", "eu"]}, "properties": {"amount": "2"}},
                "eu"
            ]
        })),
        [
            p("filters[0].values", "invalid_value"),
            p("filters[1].values.region", "invalid_value"),
            p("filters[1].properties.amount", "invalid_value"),
            p("filters[2].values.region[1]", "duplicate_value"),
            p("filters[2].values.tier", "invalid_type"),
            p("filters[2].properties", "missing_field"),
            p("filters[3].values.region[0]", "invalid_value"),
            p("filters[6]", "invalid_type"),
            // Same keys and values in another order: the later filter could never count.
            p("filters[5]", "duplicate_value"),
        ]
    );
}
