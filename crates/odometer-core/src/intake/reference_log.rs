//! The reference event log: a plain in-memory store of accepted events, written to be obviously
//! right, that every event store backend is tested against (semantics 1.5, 2.2 and 2.6).
//!
//! It only keys, deduplicates, numbers and stores: events reach it already validated
//! (structure by [`super::parse_event`], catalog rules by [`super::validate_event`]).
//!
//! Rules it pins:
//! * The key is `(organization, customer, transaction_id)`, for all time. The same key again
//!   with the same content ([`super::content_hash`]) is [`EventOutcome::Duplicate`] carrying the
//!   original's sequence; with different content it is rejected with
//!   `transaction_id_conflict` and the first event stays as it was. This holds inside one batch
//!   too: a later event is compared with the earlier one of the same batch.
//! * Sequences are strictly increasing per organization, from 1, in acceptance order, without
//!   gaps; every event accepted by one call gets that call's `now` as `ingested_at`.
//! * Without `atomic`, each event stands alone. With `atomic`, when any event is rejected
//!   nothing is stored and no sequence is used: the rejected events keep their own rejection,
//!   so the client sees what to fix, and every other event answers `Rejected` with code
//!   `batch_rejected` ([`batch_rejection`]), even one that duplicates an event stored by an
//!   earlier request. That keeps one simple rule, "a failed atomic batch stores nothing and
//!   answers nothing but rejections", which a caller that rejects the batch before reaching
//!   the store (say, on an `unknown_customer`) can follow without asking the store which
//!   events are duplicates; resending the fixed batch answers those `duplicate`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::identity::{content_differences, content_hash};
use crate::event::{Event, EventOutcome, EventRejection, StoredEvent};
use crate::id::OrganizationId;
use crate::time::truncate_to_micros;

/// Every organization's accepted events, in memory.
#[derive(Debug, Clone, Default)]
pub struct ReferenceEventLog {
    organizations: HashMap<OrganizationId, OrganizationLog>,
}

#[derive(Debug, Clone, Default)]
struct OrganizationLog {
    /// In acceptance order; the event at index `i` has sequence `i + 1`.
    events: Vec<StoredEvent>,
    /// `(customer, transaction_id)` to the index of its event in `events`.
    by_key: HashMap<(String, String), usize>,
}

impl ReferenceEventLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a batch of already-validated events for `org` and answers each event's outcome,
    /// in order (the module documentation gives the rules).
    pub fn append(
        &mut self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
        now: DateTime<Utc>,
    ) -> Vec<EventOutcome> {
        let ingested_at = truncate_to_micros(now);
        let log = self.organizations.entry(org).or_default();
        let stored_before = log.events.len();
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            let key = (event.customer.clone(), event.transaction_id.clone());
            let outcome = match log.by_key.get(&key) {
                Some(&index) => compare_with_first(&log.events[index], &event),
                None => {
                    let sequence = sequence_at(log.events.len());
                    log.by_key.insert(key, log.events.len());
                    log.events.push(StoredEvent { event, sequence, ingested_at });
                    EventOutcome::Accepted { sequence }
                }
            };
            outcomes.push(outcome);
        }
        let rejected: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, outcome)| !outcome.is_stored())
            .map(|(i, _)| i)
            .collect();
        if atomic && !rejected.is_empty() {
            // Staged, then rolled back: nothing of this batch stays, no sequence is used.
            for undone in log.events.drain(stored_before..) {
                log.by_key.remove(&(undone.event.customer, undone.event.transaction_id));
            }
            let not_stored = batch_rejection(rejected.len(), rejected[0]);
            for outcome in &mut outcomes {
                if outcome.is_stored() {
                    *outcome = EventOutcome::Rejected(not_stored.clone());
                }
            }
        }
        outcomes
    }

    /// A customer's events, in sequence order.
    pub fn events(&self, org: OrganizationId, customer: &str) -> Vec<StoredEvent> {
        self.organizations.get(&org).map_or_else(Vec::new, |log| {
            log.events.iter().filter(|stored| stored.event.customer == customer).cloned().collect()
        })
    }

    /// The event stored under a key, if any.
    pub fn get(
        &self,
        org: OrganizationId,
        customer: &str,
        transaction_id: &str,
    ) -> Option<StoredEvent> {
        let log = self.organizations.get(&org)?;
        let index = log.by_key.get(&(customer.to_owned(), transaction_id.to_owned()))?;
        log.events.get(*index).cloned()
    }

    /// All of an organization's events, in sequence order.
    pub fn all_events(&self, org: OrganizationId) -> Vec<StoredEvent> {
        self.organizations.get(&org).map_or_else(Vec::new, |log| log.events.clone())
    }

    /// The greatest sequence used in the organization; 0 before its first event.
    pub fn last_sequence(&self, org: OrganizationId) -> u64 {
        self.organizations.get(&org).map_or(0, |log| sequence_at(log.events.len()) - 1)
    }
}

/// The sequence of the event stored at `index`.
fn sequence_at(index: usize) -> u64 {
    index as u64 + 1
}

fn compare_with_first(first: &StoredEvent, event: &Event) -> EventOutcome {
    if content_hash(&first.event) == content_hash(event) {
        return EventOutcome::Duplicate { sequence: first.sequence };
    }
    EventOutcome::Rejected(conflict_rejection(&first.event, event))
}

/// The rejection of `event`, whose key `first` already holds with different content.
pub fn conflict_rejection(first: &Event, event: &Event) -> EventRejection {
    let differences = content_differences(first, event).join(", ");
    EventRejection::new(
        "transaction_id_conflict",
        format!(
            "transaction_id: '{}' was already used for customer '{}' by an event with a \
             different {differences}; the first event stays as it was",
            event.transaction_id, event.customer
        ),
    )
}

/// The rejection of every event that was not itself rejected in a failed atomic batch:
/// `rejected_count` events were rejected, the first at `first_rejected` (0-based).
pub fn batch_rejection(rejected_count: usize, first_rejected: usize) -> EventRejection {
    let count = match rejected_count {
        1 => "1 event was".to_owned(),
        n => format!("{n} events were"),
    };
    EventRejection::new(
        "batch_rejected",
        format!(
            "not stored: the batch is atomic and {count} rejected (the first at index \
             {first_rejected})"
        ),
    )
}
