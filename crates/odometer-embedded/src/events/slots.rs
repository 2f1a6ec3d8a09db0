//! Typed property columns: each organization's top-level property keys are assigned, in the
//! order they are first seen, to one of [`SLOTS`] slot columns of the events table. A slot
//! holds the property's canonical text (`s<i>`, for filters, segmentation, grouping and
//! `unique_count`) and, when the property is a decimal, its exact value scaled to an integer
//! (`n<i>`, a `HUGEINT` holding value × 10^[`SCALE`], for `sum`, `min`, `max`, `mean`). So
//! usage queries read typed columns and never re-parse the JSON of the properties.
//!
//! A slot's two columns are added to the table (`ALTER TABLE ... ADD COLUMN`) when some
//! organization first takes it, so rows carry as many slot columns as the busiest
//! organization has keys, not all 32 (a database of layout 2 has all of them from the start,
//! grouped `s0..s15, n0..n15`; later ones interleave `s0, n0, s1, n1, ...`).
//!
//! Keys past the last slot are *spilled*: they stay in the JSON only, and a metric that reads
//! one is answered by the reference engine from the JSON. A decimal that a slot cannot hold
//! exactly (more than 10 fractional digits, or 10^28 and beyond) marks its row `wide`;
//! a pushed-down query that meets a wide row also falls back.
//!
//! Invariant: a key's slot is registered (in memory and in `property_slots`) before any row
//! using it is committed, and readers hold the registry's read lock for the whole query, so a
//! query never sees a row whose slot it does not know.

use std::collections::HashMap;

use odometer_core::engine::canonical_value;
use odometer_core::input::decimal_value;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

/// How many property slots an organization has.
pub const SLOTS: usize = 16;

/// Slot numbers are stored as value × 10^SCALE in a 128-bit integer.
pub const SCALE: u32 = 10;

/// Where one organization's property key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotOf {
    Slot(usize),
    /// Seen after every slot was taken: in the JSON only.
    Spilled,
}

/// One organization's keys.
#[derive(Debug, Default, Clone)]
pub struct OrgSlots {
    pub keys: HashMap<String, SlotOf>,
    /// How many slots are taken.
    pub used: usize,
}

impl OrgSlots {
    pub fn get(&self, key: &str) -> Option<SlotOf> {
        self.keys.get(key).copied()
    }

    /// Registers `key` if new; returns its place and whether it was new.
    pub fn assign(&mut self, key: &str) -> (SlotOf, bool) {
        if let Some(found) = self.keys.get(key) {
            return (*found, false);
        }
        let place = if self.used < SLOTS {
            self.used += 1;
            SlotOf::Slot(self.used - 1)
        } else {
            SlotOf::Spilled
        };
        self.keys.insert(key.to_owned(), place);
        (place, true)
    }
}

/// One typed column of the events table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotColumn {
    /// `s<i>`: the canonical text of slot `i`.
    Text(usize),
    /// `n<i>`: the scaled decimal of slot `i`.
    Number(usize),
}

impl SlotColumn {
    /// The column named `name`, if it is a slot column.
    pub fn parse(name: &str) -> Option<Self> {
        let slot = |digits: &str| digits.parse::<usize>().ok().filter(|i| *i < SLOTS);
        if let Some(i) = name.strip_prefix('s').and_then(slot) {
            return Some(Self::Text(i));
        }
        name.strip_prefix('n').and_then(slot).map(Self::Number)
    }
}

/// Every organization's keys, and the slot columns the table has, in table order.
#[derive(Debug, Default, Clone)]
pub struct SlotRegistry {
    pub orgs: HashMap<String, OrgSlots>,
    pub columns: Vec<SlotColumn>,
}

impl SlotRegistry {
    pub fn org(&self, org: &str) -> Option<&OrgSlots> {
        self.orgs.get(org)
    }

    /// Whether slot `i` has both its columns.
    pub fn has_slot(&self, i: usize) -> bool {
        self.columns.contains(&SlotColumn::Text(i)) && self.columns.contains(&SlotColumn::Number(i))
    }

    /// The slots `0..n` that have their columns (slots are taken in order, so these are all).
    pub fn slots_with_columns(&self) -> usize {
        (0..SLOTS).take_while(|&i| self.has_slot(i)).count()
    }
}

/// An exact decimal as value × 10^SCALE; `None` when that is not exact or does not fit.
pub fn scaled(value: Decimal) -> Option<i128> {
    let value = value.normalize();
    let scale = value.scale();
    if scale > SCALE {
        return None;
    }
    let n = value.mantissa().checked_mul(10i128.checked_pow(SCALE - scale)?)?;
    // Appended through Arrow as a 38-digit decimal.
    (n.unsigned_abs() < MAX_SCALED).then_some(n)
}

/// 10^38: scaled values stay below it (38 digits).
const MAX_SCALED: u128 = 100_000_000_000_000_000_000_000_000_000_000_000_000;

/// The decimal of a scaled integer; `None` when a decimal cannot hold it exactly.
pub fn unscaled(mut value: i128) -> Option<Decimal> {
    let mut scale = SCALE;
    loop {
        if let Ok(d) = Decimal::try_from_i128_with_scale(value, scale) {
            return Some(d.normalize());
        }
        if scale == 0 || value % 10 != 0 {
            return None;
        }
        value /= 10;
        scale -= 1;
    }
}

/// The typed columns of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedRow {
    /// Bit `i`: the property of slot `i` is there and not null.
    pub present: u32,
    /// A decimal property did not fit its slot exactly.
    pub wide: bool,
    pub texts: [Option<String>; SLOTS],
    pub numbers: [Option<i128>; SLOTS],
}

/// Reads an event's properties into its organization's slots.
pub fn typed_columns(slots: &OrgSlots, properties: &Map<String, Value>) -> TypedRow {
    let mut row = TypedRow {
        present: 0,
        wide: false,
        texts: std::array::from_fn(|_| None),
        numbers: [None; SLOTS],
    };
    for (key, value) in properties {
        let Some(SlotOf::Slot(i)) = slots.get(key) else { continue };
        if !value.is_null() {
            row.present |= 1 << i;
        }
        row.texts[i] = canonical_value(value);
        if let Some(number) = decimal_value(value) {
            match scaled(number) {
                Some(n) => row.numbers[i] = Some(n),
                None => row.wide = true,
            }
        }
    }
    row
}

/// The column definitions of the typed columns of a new table, for `CREATE TABLE` (slot
/// columns are added as slots are taken).
pub fn column_definitions() -> &'static str {
    "present UINTEGER NOT NULL,\n    wide BOOLEAN NOT NULL"
}

/// The statements adding slot `i`'s columns.
pub fn add_slot_columns(i: usize) -> String {
    format!(
        "ALTER TABLE events ADD COLUMN s{i} VARCHAR; ALTER TABLE events ADD COLUMN n{i} HUGEINT;"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    #[test]
    fn decimals_scale_exactly_or_not_at_all() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(scaled(d("1.5")), Some(15_000_000_000));
        assert_eq!(scaled(d("-0.0000000001")), Some(-1));
        assert_eq!(scaled(d("1.00000000000")), Some(10_000_000_000), "trailing zeros do not count");
        assert_eq!(scaled(d("0.00000000001")), None, "11 fractional digits");
        assert_eq!(scaled(Decimal::MAX), None);
        // A slot holds 38 digits once scaled: 28 integer digits fit, 10^28 does not.
        assert!(scaled(d("9999999999999999999999999999")).is_some(), "28 integer digits");
        assert_eq!(scaled(d("10000000000000000000000000000")), None, "10^28");
        assert_eq!(unscaled(15_000_000_000), Some(d("1.5")));
        assert_eq!(
            unscaled(scaled(d("12345678901234567.25")).unwrap()),
            Some(d("12345678901234567.25"))
        );
        // 10^37 scaled is 10^27: a decimal holds it once the zeros are dropped.
        assert_eq!(unscaled(10i128.pow(37)), Some(d("1000000000000000000000000000")));
        assert_eq!(unscaled(10i128.pow(37) + 1), None);
    }

    #[test]
    fn slots_are_taken_in_order_then_spill() {
        let mut org = OrgSlots::default();
        for i in 0..SLOTS {
            assert_eq!(org.assign(&format!("k{i}")), (SlotOf::Slot(i), true));
        }
        assert_eq!(org.assign("k0"), (SlotOf::Slot(0), false));
        assert_eq!(org.assign("late"), (SlotOf::Spilled, true));
        assert_eq!(org.assign("late"), (SlotOf::Spilled, false));
    }

    #[test]
    fn typed_columns_hold_canonical_text_and_exact_numbers() {
        let mut org = OrgSlots::default();
        for key in ["n", "region", "obj", "nothing", "tiny"] {
            org.assign(key);
        }
        let properties = json!({"n": "2.50", "region": "eu", "obj": {"a": 1}, "nothing": null,
            "tiny": "0.00000000001"});
        let row = typed_columns(&org, properties.as_object().unwrap());
        assert_eq!(row.present, 0b10111, "all but the null");
        assert!(row.wide, "tiny is too fine for a slot");
        assert_eq!(row.texts[0].as_deref(), Some("2.5"));
        assert_eq!(row.texts[1].as_deref(), Some("eu"));
        assert_eq!(row.texts[2], None, "an object has no canonical text");
        assert_eq!(row.numbers[0], Some(25_000_000_000));
        assert_eq!(row.numbers[1], None, "eu is not a number");
    }
}
