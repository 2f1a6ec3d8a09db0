//! What one log record holds (one group commit: every accepted event of the requests it
//! merged), its encoding (postcard, strings borrowed from the record when read), and the same
//! record in memory while it waits for the columnarizer.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use odometer_core::event::{Event, StoredEvent};
use odometer_core::OrganizationId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One record as encoded in the log.
#[derive(Debug, Serialize, Deserialize)]
struct RecordDoc<'a> {
    #[serde(borrow)]
    chunks: Vec<ChunkDoc<'a>>,
}

/// The accepted events of one request (one organization, one `ingested_at`).
#[derive(Debug, Serialize, Deserialize)]
struct ChunkDoc<'a> {
    org: u128,
    ingested_at: i64,
    #[serde(borrow)]
    events: Vec<EventDoc<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventDoc<'a> {
    sequence: u64,
    fingerprint: u128,
    content: u128,
    timestamp: i64,
    customer: &'a str,
    transaction_id: &'a str,
    code: &'a str,
    /// The properties' compact JSON text.
    properties: &'a str,
}

/// The accepted events of one request, as the columnarizer and readers need them.
#[derive(Debug, Clone)]
pub(super) struct Chunk {
    pub org: OrganizationId,
    pub events: Vec<StoredEvent>,
    /// Each event's properties as compact JSON text.
    pub properties: Vec<String>,
    /// Each event's identity fingerprint and content hash.
    pub keyed: Vec<(u128, u128)>,
}

/// A durable record waiting to be columnarized.
#[derive(Debug)]
pub(super) struct Pending {
    pub lsn: u64,
    pub chunks: Vec<Chunk>,
}

impl Pending {
    pub fn events(&self) -> usize {
        self.chunks.iter().map(|c| c.events.len()).sum()
    }

    /// The stored event of `org` with `sequence`, if this record holds it.
    pub fn find(&self, org: OrganizationId, sequence: u64) -> Option<&StoredEvent> {
        self.chunks
            .iter()
            .filter(|c| c.org == org)
            .flat_map(|c| c.events.iter())
            .find(|e| e.sequence == sequence)
    }
}

/// The log payload of a record's chunks.
pub(super) fn encode(chunks: &[Chunk]) -> Result<Vec<u8>, postcard::Error> {
    let doc = RecordDoc {
        chunks: chunks
            .iter()
            .map(|chunk| ChunkDoc {
                org: chunk.org.as_uuid().as_u128(),
                ingested_at: chunk.events.first().map_or(0, |e| e.ingested_at.timestamp_micros()),
                events: chunk
                    .events
                    .iter()
                    .zip(&chunk.properties)
                    .zip(&chunk.keyed)
                    .map(|((stored, properties), &(fingerprint, content))| EventDoc {
                        sequence: stored.sequence,
                        fingerprint,
                        content,
                        timestamp: stored.event.timestamp.timestamp_micros(),
                        customer: &stored.event.customer,
                        transaction_id: &stored.event.transaction_id,
                        code: &stored.event.code,
                        properties,
                    })
                    .collect(),
            })
            .collect(),
    };
    postcard::to_stdvec(&doc)
}

fn instant(micros: i64) -> Result<DateTime<Utc>, String> {
    Utc.timestamp_micros(micros).single().ok_or_else(|| format!("instant {micros} out of range"))
}

/// A record read back from the log.
pub(super) fn decode(lsn: u64, payload: &[u8]) -> Result<Arc<Pending>, String> {
    let doc: RecordDoc<'_> =
        postcard::from_bytes(payload).map_err(|e| format!("log record {lsn}: {e}"))?;
    let mut chunks = Vec::with_capacity(doc.chunks.len());
    for chunk in doc.chunks {
        let org = OrganizationId::from_uuid(uuid::Uuid::from_u128(chunk.org));
        let ingested_at = instant(chunk.ingested_at)?;
        let mut out = Chunk {
            org,
            events: Vec::with_capacity(chunk.events.len()),
            properties: Vec::with_capacity(chunk.events.len()),
            keyed: Vec::with_capacity(chunk.events.len()),
        };
        for e in chunk.events {
            let properties: Map<String, Value> = serde_json::from_str(e.properties)
                .map_err(|err| format!("log record {lsn}: properties: {err}"))?;
            out.events.push(StoredEvent {
                event: Event {
                    transaction_id: e.transaction_id.to_owned(),
                    code: e.code.to_owned(),
                    customer: e.customer.to_owned(),
                    timestamp: instant(e.timestamp)?,
                    properties,
                },
                sequence: e.sequence,
                ingested_at,
            });
            out.properties.push(e.properties.to_owned());
            out.keyed.push((e.fingerprint, e.content));
        }
        chunks.push(out);
    }
    Ok(Arc::new(Pending { lsn, chunks }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_reads_back_as_written() {
        let org = OrganizationId::new();
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let properties = json!({"b": "x", "a": 1.50, "nested": {"k": [1, null]}});
        let chunk = Chunk {
            org,
            events: vec![StoredEvent {
                event: Event {
                    transaction_id: "tx-1".into(),
                    code: "api".into(),
                    customer: "c".into(),
                    timestamp: at,
                    properties: properties.as_object().unwrap().clone(),
                },
                sequence: 7,
                ingested_at: at + chrono::TimeDelta::seconds(1),
            }],
            properties: vec![properties.to_string()],
            keyed: vec![(u128::MAX - 3, 42)],
        };
        let bytes = encode(std::slice::from_ref(&chunk)).unwrap();
        let back = decode(9, &bytes).unwrap();
        assert_eq!(back.lsn, 9);
        assert_eq!(back.chunks.len(), 1);
        let read = &back.chunks[0];
        assert_eq!(read.org, org);
        assert_eq!(read.events, chunk.events);
        assert_eq!(read.properties, chunk.properties);
        assert_eq!(read.keyed, chunk.keyed);
        assert!(decode(9, &bytes[..bytes.len() - 3]).is_err());
    }
}
