//! The event store conformance suite: one set of behavioural tests every [`EventStore`] backend
//! runs, each comparing the store with the reference implementations of `odometer-core`.
//!
//! The oracles are [`ReferenceEventLog`] for appends (outcomes, sequences, rejection codes and
//! messages) and [`compute_usage`] over the reference log's events for usage. A [`Paired`]
//! feeds both the same calls, so most checks read "the store answers what the reference
//! answers", plus a few hand-written expectations so a suite never passes against a reference
//! that answers nothing.
//!
//! Choices a backend must share beyond the trait's prose:
//! - the accepted events of one `append` share one `ingested_at`, taken during the call;
//! - an event list page that ends exactly at the last event has no `next_cursor`;
//! - a cursor the store did not produce is [`StoreError::InvalidCursor`];
//! - a usage question the engine refuses fails with the engine's [`UsageError`], not a store
//!   error;
//! - `usage_of_customers` answers one result per customer given, so a customer listed twice is
//!   answered twice.
//!
//! [`UsageError`]: odometer_core::usage::UsageError

mod appends;
mod index;
mod reads;
mod reopen;
mod streams;
mod usage;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use odometer_core::engine::compute_usage;
use odometer_core::event::{Event, EventOutcome, StoredEvent};
use odometer_core::intake::ReferenceEventLog;
use odometer_core::usage::{UsageQuery, UsageResult, WindowSize, DEFAULT_GROUP_LIMIT};
use odometer_core::{time, MetricSpec, OrganizationId};

use crate::catalog::Page;
use crate::error::StoreError;
use crate::events::{EventListParams, EventStore, UsageQueryError};

pub use appends::{
    appends_answer_as_the_reference_log, appends_number_events_per_organization_from_1,
    atomic_batches_store_nothing_when_any_event_is_rejected,
    conflicting_events_are_rejected_and_the_first_stays,
    duplicates_are_stored_once_whatever_the_spelling, empty_batches_answer_nothing,
    repeats_within_one_batch_are_compared_with_the_earlier_event,
    the_key_includes_customer_and_organization,
};
pub use index::{
    an_update_is_answered_as_the_new_revision_while_its_state_builds, answer_of,
    as_of_in_the_past_is_answered_from_the_events, index_states_are_built_then_answer,
    presentation_changes_reuse_the_state, the_index_keeps_up_with_appends, wait_until_indexed,
};
pub use reads::{
    customer_events_are_one_customer_and_code_in_ingestion_order,
    event_lists_filter_by_customer_code_and_time, event_lists_page_in_sequence_order,
    invalid_event_cursors_are_rejected, other_organizations_events_are_never_seen,
    stored_events_are_read_back_by_key,
};
pub use reopen::{a_reopened_store_keeps_every_event, the_index_survives_a_reopen};
pub use streams::event_streams_match_the_reference;
pub use usage::{
    usage_as_of_hides_events_ingested_later, usage_errors_match_the_reference,
    usage_matches_the_reference_engine, usage_of_customers_answers_in_the_order_given,
};

/// Expands to one test per event store conformance suite function, named after it, in the
/// module where it is invoked (invoke it inside a `mod` of its own to run the suite on several
/// configurations of one backend).
///
/// `$make` is a path to (or any expression evaluating to) an `async fn() -> (S, G)` with no
/// arguments, where `S: EventStore` is a fresh, empty store and `G` is anything that must stay
/// alive while the test runs (a `TempDir` holding the database; `()` for an in-memory store).
/// It is called once per test, and once per generated case by the property test
/// ([`event_streams_match_the_reference`], a plain `#[test]` that runs its own tokio runtime),
/// so tests never share state. The crate invoking the macro needs `tokio` (with the `macros`
/// and `rt` features) as a dependency.
///
/// A backend whose data outlives the store value adds `reopen = $reopen`: an
/// `async fn(S, G) -> (S, G)` that drops the store and opens the same data again (keeping or
/// passing on the guard). That adds [`a_reopened_store_keeps_every_event`].
///
/// A backend with a usage index adds `index` (last): the index tests of [`index`], and the
/// property test then also requires that a good share of its questions were answered from the
/// index (with `reopen`, also [`the_index_survives_a_reopen`]).
///
/// ```text
/// async fn file_store() -> (DuckEventStore, tempfile::TempDir) {
///     let dir = tempfile::tempdir().unwrap();
///     let store = DuckEventStore::open(&dir.path().join("events.duckdb")).await.unwrap();
///     (store, dir)
/// }
///
/// async fn reopen(store: DuckEventStore, dir: tempfile::TempDir) -> (DuckEventStore, TempDir) {
///     drop(store);
///     (DuckEventStore::open(&dir.path().join("events.duckdb")).await.unwrap(), dir)
/// }
///
/// mod duckdb_file {
///     odometer_store::event_store_conformance_tests!(super::file_store, reopen = super::reopen, index);
/// }
/// ```
#[macro_export]
macro_rules! event_store_conformance_tests {
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = ($make)().await;
                $crate::conformance::events::$name(&store).await;
            }
        )*
    };
    (@common $make:expr) => {
        $crate::event_store_conformance_tests!(@tests $make;
            appends_answer_as_the_reference_log,
            appends_number_events_per_organization_from_1,
            duplicates_are_stored_once_whatever_the_spelling,
            conflicting_events_are_rejected_and_the_first_stays,
            repeats_within_one_batch_are_compared_with_the_earlier_event,
            the_key_includes_customer_and_organization,
            atomic_batches_store_nothing_when_any_event_is_rejected,
            empty_batches_answer_nothing,
            stored_events_are_read_back_by_key,
            event_lists_page_in_sequence_order,
            event_lists_filter_by_customer_code_and_time,
            customer_events_are_one_customer_and_code_in_ingestion_order,
            invalid_event_cursors_are_rejected,
            other_organizations_events_are_never_seen,
            usage_matches_the_reference_engine,
            usage_as_of_hides_events_ingested_later,
            usage_of_customers_answers_in_the_order_given,
            usage_errors_match_the_reference,
        );
    };
    ($make:expr) => {
        $crate::event_store_conformance_tests!(@common $make);

        #[test]
        fn event_streams_match_the_reference() {
            $crate::conformance::events::event_streams_match_the_reference($make, false);
        }
    };
    ($make:expr, index) => {
        $crate::event_store_conformance_tests!(@common $make);
        $crate::event_store_conformance_tests!(@tests $make;
            index_states_are_built_then_answer,
            the_index_keeps_up_with_appends,
            an_update_is_answered_as_the_new_revision_while_its_state_builds,
            presentation_changes_reuse_the_state,
            as_of_in_the_past_is_answered_from_the_events,
        );

        #[test]
        fn event_streams_match_the_reference() {
            $crate::conformance::events::event_streams_match_the_reference($make, true);
        }
    };
    ($make:expr, reopen = $reopen:expr $(, $index:ident)?) => {
        $crate::event_store_conformance_tests!($make $(, $index)?);

        #[tokio::test]
        async fn a_reopened_store_keeps_every_event() {
            let (store, guard) = ($make)().await;
            $crate::conformance::events::a_reopened_store_keeps_every_event(store, guard, $reopen)
                .await;
        }

        $(
            #[tokio::test]
            async fn the_index_survives_a_reopen() {
                let _ = stringify!($index);
                let (store, guard) = ($make)().await;
                $crate::conformance::events::the_index_survives_a_reopen(store, guard, $reopen)
                    .await;
            }
        )?
    };
}

/// An instant from RFC 3339 text.
pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad test instant {text}: {e}"))
        .with_timezone(&Utc)
}

/// An event as validation would pass it (`properties` must be a JSON object).
pub fn event(
    customer: &str,
    transaction_id: &str,
    code: &str,
    timestamp: &str,
    props: Value,
) -> Event {
    let Value::Object(properties) = props else { panic!("properties must be an object: {props}") };
    Event {
        transaction_id: transaction_id.to_owned(),
        code: code.to_owned(),
        customer: customer.to_owned(),
        timestamp: at(timestamp),
        properties,
    }
}

/// A one-window query over `[from, to)` in UTC, without grouping or `as_of`.
pub fn usage_query(from: &str, to: &str) -> UsageQuery {
    UsageQuery {
        from: at(from),
        to: at(to),
        window: WindowSize::None,
        timezone: chrono_tz::Tz::UTC,
        group_by: Vec::new(),
        as_of: None,
        group_limit: DEFAULT_GROUP_LIMIT,
    }
}

/// What an event list compares by: the event and its sequence (`ingested_at` is the store's
/// own clock reading, checked separately against the time of the append).
pub fn identities(events: &[StoredEvent]) -> Vec<(Event, u64)> {
    events.iter().map(|e| (e.event.clone(), e.sequence)).collect()
}

/// The `accepted` / `duplicate` / `rejected` status of each outcome, for hand-written checks.
pub fn statuses(outcomes: &[EventOutcome]) -> Vec<&'static str> {
    outcomes.iter().map(EventOutcome::status).collect()
}

/// The rejection code of each outcome (`None` for stored ones).
pub fn rejection_codes(outcomes: &[EventOutcome]) -> Vec<Option<&'static str>> {
    outcomes.iter().map(|o| o.rejection().map(|r| r.code)).collect()
}

/// The store under test beside the reference log, fed the same appends.
pub struct Paired<'a> {
    pub store: &'a dyn EventStore,
    pub reference: ReferenceEventLog,
    /// For each accepted event, the clock just before and just after the store call that
    /// accepted it: its `ingested_at` must lie between.
    brackets: HashMap<(OrganizationId, u64), (DateTime<Utc>, DateTime<Utc>)>,
    /// The clock just after each append, in call order: an `as_of` at one of these sees that
    /// call's events and none of the next call's.
    pub append_ends: Vec<DateTime<Utc>>,
}

/// A [`Paired`] without its store.
#[derive(Debug)]
pub struct Recorded {
    reference: ReferenceEventLog,
    brackets: HashMap<(OrganizationId, u64), (DateTime<Utc>, DateTime<Utc>)>,
    append_ends: Vec<DateTime<Utc>>,
}

impl std::fmt::Debug for Paired<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paired").field("reference", &self.reference).finish_non_exhaustive()
    }
}

impl<'a> Paired<'a> {
    pub fn new(store: &'a dyn EventStore) -> Self {
        Self {
            store,
            reference: ReferenceEventLog::new(),
            brackets: HashMap::new(),
            append_ends: Vec::new(),
        }
    }

    /// What was recorded besides the store, to carry over to the same data reopened.
    pub fn into_recorded(self) -> Recorded {
        Recorded {
            reference: self.reference,
            brackets: self.brackets,
            append_ends: self.append_ends,
        }
    }

    /// Continues with `store` (the same data reopened) where [`Self::into_recorded`] stopped.
    pub fn resume(store: &'a dyn EventStore, recorded: Recorded) -> Self {
        Self {
            store,
            reference: recorded.reference,
            brackets: recorded.brackets,
            append_ends: recorded.append_ends,
        }
    }

    /// Appends to the store, then the same call to the reference (at the time the store call
    /// returned), and panics unless the outcomes are identical. Answers the outcomes.
    pub async fn append(
        &mut self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
        what: &str,
    ) -> Vec<EventOutcome> {
        let (actual, expected) = self.append_both(org, events, atomic).await;
        let actual = actual.unwrap_or_else(|e| panic!("{what}: append failed: {e}"));
        assert_eq!(actual, expected, "{what}: outcomes differ from the reference log");
        actual
    }

    /// Appends to both and answers both outcomes, for callers that report differences their
    /// own way (the property test).
    pub async fn append_both(
        &mut self,
        org: OrganizationId,
        events: Vec<Event>,
        atomic: bool,
    ) -> (Result<Vec<EventOutcome>, StoreError>, Vec<EventOutcome>) {
        let before = time::now();
        let actual = self.store.append(org, events.clone(), atomic).await;
        let after = time::now();
        let expected = self.reference.append(org, events, atomic, after);
        for outcome in &expected {
            if let EventOutcome::Accepted { sequence } = outcome {
                self.brackets.insert((org, *sequence), (before, after));
            }
        }
        self.append_ends.push(after);
        // The next call must start strictly later, so that an `as_of` at `after` tells this
        // call's events from the next one's even on a fast machine (the clock has
        // microseconds, a call can take less).
        while time::now() <= after {
            std::hint::spin_loop();
        }
        (actual, expected)
    }

    /// The reference's events of one customer, in sequence order.
    pub fn events_of(&self, org: OrganizationId, customer: &str) -> Vec<StoredEvent> {
        self.reference.events(org, customer)
    }

    /// Panics unless `stored` is the reference's event for its key, with its sequence, and an
    /// `ingested_at` taken during the append that accepted it.
    #[track_caller]
    pub fn assert_stored(&self, org: OrganizationId, stored: &StoredEvent, what: &str) {
        let key = (&stored.event.customer, &stored.event.transaction_id);
        let expected = self
            .reference
            .get(org, key.0, key.1)
            .unwrap_or_else(|| panic!("{what}: the store has {key:?}, the reference does not"));
        assert_eq!(stored.event, expected.event, "{what}: stored event {key:?}");
        assert_eq!(stored.sequence, expected.sequence, "{what}: sequence of {key:?}");
        let (before, after) = self.brackets[&(org, stored.sequence)];
        assert!(
            before <= stored.ingested_at && stored.ingested_at <= after,
            "{what}: ingested_at {} of {key:?} is not within its append ({before} to {after})",
            stored.ingested_at
        );
    }

    /// Panics unless the store's usage equals the reference engine's over the reference log's
    /// events of `customer` (errors included).
    pub async fn assert_usage(
        &self,
        org: OrganizationId,
        customer: &str,
        spec: &MetricSpec,
        query: &UsageQuery,
        what: &str,
    ) -> UsageResult {
        let expected = compute_usage(spec, &self.events_of(org, customer), query);
        let actual = self.store.usage(org, customer, spec, query).await;
        match (actual, expected) {
            (Ok(actual), Ok(expected)) => {
                assert_eq!(actual, expected, "{what}: usage of {customer} for {}", spec.code);
                actual
            }
            (actual, expected) => panic!(
                "{what}: usage of {customer} for {}: the store answers {actual:?}, the \
                 reference {expected:?}",
                spec.code
            ),
        }
    }
}

/// Compares a store's usage answer with the reference engine's, errors included; `None` when
/// they agree, else what differs.
pub fn usage_difference(
    actual: &Result<UsageResult, UsageQueryError>,
    expected: &Result<UsageResult, odometer_core::usage::UsageError>,
) -> Option<String> {
    let same = match (actual, expected) {
        (Ok(a), Ok(e)) => a == e,
        (Err(UsageQueryError::Usage(a)), Err(e)) => a == e,
        _ => false,
    };
    (!same).then(|| format!("the store answers {actual:?}, the reference {expected:?}"))
}

/// Follows `next_cursor` to the end; answers every page.
pub async fn all_event_pages(
    store: &dyn EventStore,
    org: OrganizationId,
    mut params: EventListParams,
) -> Vec<Page<StoredEvent>> {
    let mut pages = Vec::new();
    loop {
        let page = store.list_events(org, &params).await.expect("list_events");
        let next = page.next_cursor.clone();
        assert!(pages.len() < 1000, "event paging does not end");
        pages.push(page);
        match next {
            Some(cursor) => params.cursor = Some(cursor),
            None => return pages,
        }
    }
}

/// Every listed event across all pages.
pub async fn listed_events(
    store: &dyn EventStore,
    org: OrganizationId,
    params: EventListParams,
) -> Vec<StoredEvent> {
    let pages = all_event_pages(store, org, params).await;
    pages.into_iter().flat_map(|p| p.items).collect()
}

/// List parameters without filters.
pub fn list_all(limit: u32) -> EventListParams {
    EventListParams { limit, ..EventListParams::default() }
}
