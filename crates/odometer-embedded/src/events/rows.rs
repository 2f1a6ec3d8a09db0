//! Accepted events as one Arrow record batch in the column order of the `events` table, for
//! DuckDB's appender: a column at a time costs far less than a value at a time.

use std::sync::Arc;

use duckdb::arrow::array::{
    ArrayRef, BooleanBuilder, Decimal128Builder, Int64Builder, StringBuilder, UInt32Builder,
    UInt64Builder,
};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::arrow::error::ArrowError;
use duckdb::arrow::record_batch::RecordBatch;
use odometer_core::event::Event;

use super::slots::{SlotColumn, TypedRow};

/// The columns of rows being gathered.
pub struct Rows {
    seq: UInt64Builder,
    org: StringBuilder,
    customer: StringBuilder,
    transaction_id: StringBuilder,
    code: StringBuilder,
    ts: Int64Builder,
    ingested_at: Int64Builder,
    properties: StringBuilder,
    fingerprint: [UInt64Builder; 2],
    content: [UInt64Builder; 2],
    present: UInt32Builder,
    wide: BooleanBuilder,
    /// The table's slot columns, in its order.
    slots: Vec<SlotBuilder>,
}

/// The builder of one slot column, with its slot.
enum SlotBuilder {
    Text(usize, StringBuilder),
    Number(usize, Decimal128Builder),
}

/// The high and low halves of a 128-bit value.
fn halves(value: u128) -> [u64; 2] {
    [(value >> 64) as u64, value as u64]
}

impl Rows {
    /// Room for `n` rows of a table whose slot columns are `columns` (in table order).
    pub fn with_capacity(n: usize, columns: &[SlotColumn]) -> Result<Self, ArrowError> {
        let slots = columns
            .iter()
            .map(|&column| {
                Ok(match column {
                    SlotColumn::Text(i) => {
                        SlotBuilder::Text(i, StringBuilder::with_capacity(n, n * 4))
                    }
                    SlotColumn::Number(i) => SlotBuilder::Number(
                        i,
                        Decimal128Builder::with_capacity(n).with_precision_and_scale(38, 0)?,
                    ),
                })
            })
            .collect::<Result<_, ArrowError>>()?;
        Ok(Rows {
            seq: UInt64Builder::with_capacity(n),
            org: StringBuilder::with_capacity(n, n * 26),
            customer: StringBuilder::with_capacity(n, n * 16),
            transaction_id: StringBuilder::with_capacity(n, n * 24),
            code: StringBuilder::with_capacity(n, n * 12),
            ts: Int64Builder::with_capacity(n),
            ingested_at: Int64Builder::with_capacity(n),
            properties: StringBuilder::with_capacity(n, n * 96),
            fingerprint: [UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n)],
            content: [UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n)],
            present: UInt32Builder::with_capacity(n),
            wide: BooleanBuilder::with_capacity(n),
            slots,
        })
    }

    /// Adds one accepted event.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        sequence: u64,
        org: &str,
        event: &Event,
        (fingerprint, content): (u128, u128),
        ingested_at: i64,
        properties_json: &str,
        typed: &TypedRow,
    ) {
        self.seq.append_value(sequence);
        self.org.append_value(org);
        self.customer.append_value(&event.customer);
        self.transaction_id.append_value(&event.transaction_id);
        self.code.append_value(&event.code);
        self.ts.append_value(event.timestamp.timestamp_micros());
        self.ingested_at.append_value(ingested_at);
        self.properties.append_value(properties_json);
        for (builder, half) in self.fingerprint.iter_mut().zip(halves(fingerprint)) {
            builder.append_value(half);
        }
        for (builder, half) in self.content.iter_mut().zip(halves(content)) {
            builder.append_value(half);
        }
        self.present.append_value(typed.present);
        self.wide.append_value(typed.wide);
        for builder in &mut self.slots {
            match builder {
                SlotBuilder::Text(i, b) => b.append_option(typed.texts[*i].as_deref()),
                SlotBuilder::Number(i, b) => b.append_option(typed.numbers[*i]),
            }
        }
    }

    /// The gathered rows as one batch.
    pub fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut add = |name: String, data_type: DataType, nullable: bool, array: ArrayRef| {
            fields.push(Field::new(name, data_type, nullable));
            columns.push(array);
        };
        add("seq".into(), DataType::UInt64, false, Arc::new(self.seq.finish()));
        add("org".into(), DataType::Utf8, false, Arc::new(self.org.finish()));
        add("customer".into(), DataType::Utf8, false, Arc::new(self.customer.finish()));
        add("transaction_id".into(), DataType::Utf8, false, Arc::new(self.transaction_id.finish()));
        add("code".into(), DataType::Utf8, false, Arc::new(self.code.finish()));
        add("ts".into(), DataType::Int64, false, Arc::new(self.ts.finish()));
        add("ingested_at".into(), DataType::Int64, false, Arc::new(self.ingested_at.finish()));
        add("properties".into(), DataType::Utf8, false, Arc::new(self.properties.finish()));
        for (name, builders) in [("fp", &mut self.fingerprint), ("content", &mut self.content)] {
            for (half, builder) in ["hi", "lo"].iter().zip(builders.iter_mut()) {
                add(format!("{name}_{half}"), DataType::UInt64, false, Arc::new(builder.finish()));
            }
        }
        add("present".into(), DataType::UInt32, false, Arc::new(self.present.finish()));
        add("wide".into(), DataType::Boolean, false, Arc::new(self.wide.finish()));
        for builder in &mut self.slots {
            match builder {
                SlotBuilder::Text(i, b) => {
                    add(format!("s{i}"), DataType::Utf8, true, Arc::new(b.finish()))
                }
                SlotBuilder::Number(i, b) => {
                    add(format!("n{i}"), DataType::Decimal128(38, 0), true, Arc::new(b.finish()))
                }
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
    }
}
