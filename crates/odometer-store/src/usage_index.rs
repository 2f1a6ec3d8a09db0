//! Keeping the event store's usage index in step with the catalog: the index holds state for
//! the current revision of every live metric, and is told again whenever a metric changes and
//! when the server starts.

use odometer_core::{MetricSpec, OrganizationId};

use crate::catalog::{ArchivedFilter, Catalog, MetricListParams};
use crate::error::StoreError;
use crate::events::EventStore;

/// The current definition of every live metric (archived or not) of `org`: what the usage
/// index keeps state for.
pub async fn current_definitions(
    catalog: &dyn Catalog,
    org: OrganizationId,
) -> Result<Vec<MetricSpec>, StoreError> {
    let mut specs = Vec::new();
    let mut params =
        MetricListParams { search: None, archived: ArchivedFilter::All, limit: 1000, cursor: None };
    loop {
        let page = catalog.list_metrics(org, &params).await?;
        specs.extend(page.items.into_iter().map(|m| m.spec));
        match page.next_cursor {
            Some(next) => params.cursor = Some(next),
            None => return Ok(specs),
        }
    }
}

/// Tells `events` the current definitions of `org`'s metrics (after a metric changed).
pub async fn sync_organization(
    catalog: &dyn Catalog,
    events: &dyn EventStore,
    org: OrganizationId,
) -> Result<(), StoreError> {
    let specs = current_definitions(catalog, org).await?;
    events.index_definitions(org, &specs).await
}

/// Tells `events` the current definitions of every organization (at start).
pub async fn sync_all(catalog: &dyn Catalog, events: &dyn EventStore) -> Result<(), StoreError> {
    for org in catalog.list_organizations().await? {
        sync_organization(catalog, events, org.id).await?;
    }
    Ok(())
}
