//! A state's binary form, so a store can keep it across restarts without reading every event
//! again: little-endian fixed-width columns, strings and JSON length-prefixed. Decimals are
//! their 16-byte `Decimal::serialize` form. The reader checks every length against what is
//! left and every column against the others, so a damaged snapshot is an error, never a
//! panic or a wrong state.

use std::collections::HashMap;

use rust_decimal::Decimal;

use super::cells::{Accs, CustomerCells, Latest};
use super::{Bound, DefinitionKey, DefinitionState};
use crate::engine::reading::EventReader;
use crate::metric::MetricSpec;
use crate::usage::GroupKey;

/// The first bytes of a state's snapshot, with the format's version.
const MAGIC: &[u8; 8] = b"ODOIDX01";

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage index snapshot: {0}")]
pub struct SnapshotError(String);

fn corrupt(what: &str) -> SnapshotError {
    SnapshotError(format!("damaged or foreign data ({what})"))
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn decimal(&mut self, d: Decimal) {
        self.0.extend_from_slice(&d.serialize());
    }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SnapshotError> {
        if self.rest.len() < n {
            return Err(corrupt(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u8(&mut self, what: &str) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &str) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    fn f64(&mut self, what: &str) -> Result<f64, SnapshotError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }
    /// A count of items of at least `item` bytes each, checked against what is left.
    fn len(&mut self, item: usize, what: &str) -> Result<usize, SnapshotError> {
        let n = usize::try_from(self.u64(what)?).map_err(|_| corrupt(what))?;
        if n.checked_mul(item.max(1)).is_none_or(|bytes| bytes > self.rest.len()) {
            return Err(corrupt(what));
        }
        Ok(n)
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], SnapshotError> {
        let n = self.len(1, what)?;
        self.take(n, what)
    }
    fn text(&mut self, what: &str) -> Result<&'a str, SnapshotError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| corrupt(what))
    }
    fn decimal(&mut self, what: &str) -> Result<Decimal, SnapshotError> {
        Ok(Decimal::deserialize(self.array(what)?))
    }
}

impl DefinitionState {
    /// Appends the state's snapshot to `out`.
    pub fn write_snapshot(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        w.0.extend_from_slice(MAGIC);
        w.bytes(self.spec.to_json().to_string().as_bytes());
        w.f64(self.bound.abs_total);
        w.u32(self.bound.max_scale);
        w.i64(self.max_ingested_at);
        w.u64(self.events);
        w.u8(u8::from(self.overflowed));
        w.len(self.groups.len());
        for group in &self.groups {
            // Serializing a key of strings cannot fail.
            w.bytes(serde_json::to_string(group).unwrap_or_default().as_bytes());
        }
        w.len(self.values.len());
        for value in &self.values {
            w.bytes(value.as_bytes());
        }
        w.len(self.customers.len());
        for (customer, cells) in &self.customers {
            w.bytes(customer.as_bytes());
            w.u8(u8::from(cells.removals));
            w.len(cells.keys.len());
            for &k in &cells.keys {
                w.u64(k);
            }
            for &c in &cells.counted {
                w.u32(c);
            }
            for &s in &cells.skipped {
                w.u32(s);
            }
            match &cells.accs {
                Accs::Counts => w.u8(0),
                Accs::Decimals(column) => {
                    w.u8(1);
                    column.iter().for_each(|d| w.decimal(*d));
                }
                Accs::Latest(column) => {
                    w.u8(2);
                    for l in column {
                        w.i64(l.timestamp);
                        w.u64(l.sequence);
                        w.decimal(l.value);
                    }
                }
                Accs::Weighted(column) => {
                    w.u8(3);
                    for (change, moment) in column {
                        w.decimal(*change);
                        w.decimal(*moment);
                    }
                }
            }
            w.len(cells.distinct.len());
            for &(k, v) in &cells.distinct {
                w.u64(k);
                w.u32(v);
            }
        }
    }

    /// Reads a state written by [`Self::write_snapshot`] from the front of `bytes`; answers
    /// it and the bytes after it.
    pub fn read_snapshot(bytes: &[u8]) -> Result<(Self, &[u8]), SnapshotError> {
        let mut r = Reader { rest: bytes };
        if r.take(MAGIC.len(), "header")? != MAGIC {
            return Err(SnapshotError("not a usage index snapshot of this version".into()));
        }
        let spec: MetricSpec =
            serde_json::from_str(r.text("definition")?).map_err(|_| corrupt("definition"))?;
        let key = DefinitionKey::of(&spec).ok_or_else(|| corrupt("definition"))?;
        let bound = Bound { abs_total: r.f64("bound")?, max_scale: r.u32("bound")? };
        let max_ingested_at = r.i64("ingestion time")?;
        let events = r.u64("events")?;
        let overflowed = r.u8("flags")? != 0;
        let n = r.len(8, "groups")?;
        let mut groups = Vec::with_capacity(n);
        for _ in 0..n {
            let key: GroupKey =
                serde_json::from_str(r.text("group")?).map_err(|_| corrupt("group"))?;
            groups.push(key);
        }
        let n = r.len(8, "values")?;
        let mut values: Vec<Box<str>> = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(r.text("value")?.into());
        }
        let kind = spec.aggregation.kind;
        let n = r.len(8, "customers")?;
        let mut customers = HashMap::with_capacity(n);
        for _ in 0..n {
            let customer: Box<str> = r.text("customer")?.into();
            let removals = r.u8("customer")? != 0;
            let cells_len = r.len(16, "cells")?;
            let mut cells = CustomerCells::new(kind);
            cells.removals = removals;
            cells.keys = (0..cells_len).map(|_| r.u64("cells")).collect::<Result<_, _>>()?;
            cells.counted = (0..cells_len).map(|_| r.u32("cells")).collect::<Result<_, _>>()?;
            cells.skipped = (0..cells_len).map(|_| r.u32("cells")).collect::<Result<_, _>>()?;
            let accs = match (r.u8("cells")?, &cells.accs) {
                (0, Accs::Counts) => Accs::Counts,
                (1, Accs::Decimals(_)) => Accs::Decimals(
                    (0..cells_len).map(|_| r.decimal("cells")).collect::<Result<_, _>>()?,
                ),
                (2, Accs::Latest(_)) => Accs::Latest(
                    (0..cells_len)
                        .map(|_| {
                            Ok(Latest {
                                timestamp: r.i64("cells")?,
                                sequence: r.u64("cells")?,
                                value: r.decimal("cells")?,
                            })
                        })
                        .collect::<Result<_, SnapshotError>>()?,
                ),
                (3, Accs::Weighted(_)) => Accs::Weighted(
                    (0..cells_len)
                        .map(|_| Ok((r.decimal("cells")?, r.decimal("cells")?)))
                        .collect::<Result<_, SnapshotError>>()?,
                ),
                _ => return Err(corrupt("cells")),
            };
            cells.accs = accs;
            let distinct_len = r.len(12, "distinct values")?;
            cells.distinct = (0..distinct_len)
                .map(|_| Ok((r.u64("distinct values")?, r.u32("distinct values")?)))
                .collect::<Result<_, SnapshotError>>()?;
            let ids_known = cells.distinct.iter().all(|&(_, v)| (v as usize) < values.len());
            let groups_known = cells.keys.iter().all(|&k| {
                let group = super::cells::key_group(k);
                group == super::cells::EXCLUDED || (group as usize) < groups.len()
            });
            if !cells.is_consistent() || !ids_known || !groups_known {
                return Err(corrupt("cells"));
            }
            customers.insert(customer, cells);
        }
        let group_ids = groups.iter().enumerate().map(|(i, g)| (g.clone(), i as u32)).collect();
        let value_ids = values.iter().enumerate().map(|(i, v)| (v.clone(), i as u32)).collect();
        let state = DefinitionState {
            key,
            reader: EventReader::new(&spec, &spec.group_by),
            kind,
            recurring: spec.aggregation.recurring && kind.may_recur(),
            spec,
            groups,
            group_ids,
            values,
            value_ids,
            customers,
            bound,
            max_ingested_at,
            events,
            overflowed,
        };
        Ok((state, r.rest))
    }
}
