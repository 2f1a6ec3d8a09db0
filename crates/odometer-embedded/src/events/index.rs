//! The usage index of the embedded store: per organization, a [`DefinitionState`] for each
//! current metric definition, kept up to date as appends become durable, built from the stored
//! events in the background when a definition is new, and saved in the store's snapshot.
//!
//! Invariants:
//! - A state is offered every event of its organization exactly once: events published after
//!   the state was registered by [`UsageIndex::publish`], events stored before by its build.
//!   Registration and publishing exclude each other (the organization's state map lock), and a
//!   build folds the stored events up to the organization's sequence at registration.
//! - `applied_through` is the organization's highest sequence whose event the state has seen
//!   (when complete): every event of its code up to there is folded in.
//! - A state is served only when complete, and only for definitions with its key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use odometer_core::event::StoredEvent;
use odometer_core::usage_index::{DefinitionKey, DefinitionState};
use odometer_core::{MetricSpec, OrganizationId};
use odometer_store::events::IndexStatus;
use odometer_store::StoreError;

/// One state and what is known about it.
#[derive(Debug)]
pub(super) struct StateEntry {
    pub state: RwLock<Tracked>,
    /// The event code the definition reads.
    code: String,
    /// Being built from the stored events: not served yet.
    building: AtomicBool,
    /// Dropped from the index (its definition is no longer current): a build stops.
    cancelled: AtomicBool,
    /// While building: events folded from the store so far, and how many there are to fold.
    built: AtomicU64,
    to_build: AtomicU64,
}

/// A state and how far it has seen its organization's events.
#[derive(Debug)]
pub(super) struct Tracked {
    pub state: DefinitionState,
    pub applied_through: u64,
}

impl StateEntry {
    fn new(state: DefinitionState, through: u64, building: bool) -> Self {
        Self {
            code: state.event_code().to_owned(),
            state: RwLock::new(Tracked { state, applied_through: through }),
            building: AtomicBool::new(building),
            cancelled: AtomicBool::new(false),
            built: AtomicU64::new(0),
            to_build: AtomicU64::new(0),
        }
    }

    pub fn is_building(&self) -> bool {
        self.building.load(Ordering::Acquire)
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub fn set_to_build(&self, n: u64) {
        self.to_build.store(n, Ordering::Relaxed);
    }

    pub fn add_built(&self, n: u64) {
        self.built.fetch_add(n, Ordering::Relaxed);
    }

    /// The build is done: the state is served from now on.
    pub fn finish_build(&self) {
        self.building.store(false, Ordering::Release);
    }

    pub fn status(&self) -> Result<IndexStatus, StoreError> {
        if self.is_building() {
            return Ok(IndexStatus::Building {
                events: self.built.load(Ordering::Relaxed),
                of: self.to_build.load(Ordering::Relaxed),
            });
        }
        let tracked = read(&self.state)?;
        Ok(IndexStatus::Complete {
            events: tracked.state.events(),
            cells: tracked.state.cells() as u64,
        })
    }
}

/// One organization's states.
#[derive(Debug, Default)]
struct OrgIndex {
    /// The organization's highest sequence offered to its states.
    published: AtomicU64,
    states: RwLock<HashMap<DefinitionKey, Arc<StateEntry>>>,
}

/// A state to build: fold the organization's stored events of `code` up to `through` (the
/// organization's sequence when the state was registered; publishing does the rest).
#[derive(Debug, Clone)]
pub(super) struct Build {
    pub org: OrganizationId,
    pub code: String,
    pub through: u64,
    pub entry: Arc<StateEntry>,
}

#[derive(Debug, Default)]
pub(super) struct UsageIndex {
    orgs: RwLock<HashMap<OrganizationId, Arc<OrgIndex>>>,
}

fn poisoned() -> StoreError {
    StoreError::Backend("usage index lock poisoned".into())
}

pub(super) fn read<T>(lock: &RwLock<T>) -> Result<std::sync::RwLockReadGuard<'_, T>, StoreError> {
    lock.read().map_err(|_| poisoned())
}

pub(super) fn write<T>(lock: &RwLock<T>) -> Result<std::sync::RwLockWriteGuard<'_, T>, StoreError> {
    lock.write().map_err(|_| poisoned())
}

impl UsageIndex {
    fn org(&self, org: OrganizationId) -> Result<Arc<OrgIndex>, StoreError> {
        if let Some(found) = read(&self.orgs)?.get(&org) {
            return Ok(found.clone());
        }
        Ok(write(&self.orgs)?.entry(org).or_default().clone())
    }

    /// Sets where each organization's events stand (at open, from the stored sequences).
    pub fn set_published(&self, org: OrganizationId, through: u64) -> Result<(), StoreError> {
        self.org(org)?.published.store(through, Ordering::Release);
        Ok(())
    }

    /// Adds a complete state read back from a snapshot.
    pub fn restore(
        &self,
        org: OrganizationId,
        state: DefinitionState,
        through: u64,
    ) -> Result<(), StoreError> {
        let index = self.org(org)?;
        let key = state.key().clone();
        write(&index.states)?.insert(key, Arc::new(StateEntry::new(state, through, false)));
        Ok(())
    }

    /// Offers durable events of `org` (in sequence order, the last with sequence `through`)
    /// to its states. Called by the writer only, in log order.
    pub fn publish(
        &self,
        org: OrganizationId,
        events: &[StoredEvent],
        through: u64,
    ) -> Result<(), StoreError> {
        let index = self.org(org)?;
        let states = read(&index.states)?;
        for entry in states.values() {
            let mut tracked = write(&entry.state)?;
            for stored in events.iter().filter(|e| e.event.code == entry.code) {
                tracked.state.apply(stored);
            }
            tracked.applied_through = through;
        }
        index.published.store(through, Ordering::Release);
        Ok(())
    }

    /// Makes `specs` the organization's indexed definitions: drops states of definitions no
    /// longer listed, registers empty ones for new definitions and answers what they need
    /// built. Definitions that share a key share a state.
    pub fn define(
        &self,
        org: OrganizationId,
        specs: &[MetricSpec],
    ) -> Result<Vec<Build>, StoreError> {
        let index = self.org(org)?;
        let mut states = write(&index.states)?;
        let mut wanted: HashMap<DefinitionKey, &MetricSpec> = HashMap::new();
        for spec in specs {
            if let Some(key) = DefinitionKey::of(spec) {
                wanted.entry(key).or_insert(spec);
            }
        }
        states.retain(|key, entry| {
            let keep = wanted.contains_key(key);
            if !keep {
                entry.cancelled.store(true, Ordering::Release);
            }
            keep
        });
        let through = index.published.load(Ordering::Acquire);
        let mut builds = Vec::new();
        for (key, spec) in wanted {
            if states.contains_key(&key) {
                continue;
            }
            let Some(state) = DefinitionState::new(spec) else { continue };
            let entry = Arc::new(StateEntry::new(state, through, true));
            states.insert(key, entry.clone());
            builds.push(Build { org, code: spec.event_code.clone(), through, entry });
        }
        Ok(builds)
    }

    /// The state for a definition, if the index keeps one.
    pub fn lookup(
        &self,
        org: OrganizationId,
        key: &DefinitionKey,
    ) -> Result<Option<Arc<StateEntry>>, StoreError> {
        let Some(index) = read(&self.orgs)?.get(&org).cloned() else { return Ok(None) };
        let states = read(&index.states)?;
        Ok(states.get(key).cloned())
    }

    /// Every complete state, with its organization (for the snapshot).
    pub fn complete_states(&self) -> Result<Vec<(OrganizationId, Arc<StateEntry>)>, StoreError> {
        let mut out = Vec::new();
        for (org, index) in read(&self.orgs)?.iter() {
            for entry in read(&index.states)?.values() {
                if !entry.is_building() {
                    out.push((*org, entry.clone()));
                }
            }
        }
        Ok(out)
    }

    /// Marks every state cancelled (the store is closing), so builds stop.
    pub fn cancel_all(&self) -> Result<(), StoreError> {
        for index in read(&self.orgs)?.values() {
            for entry in read(&index.states)?.values() {
                entry.cancelled.store(true, Ordering::Release);
            }
        }
        Ok(())
    }
}
