//! Organizations and their keys: bootstrapping a data directory and authenticating requests.

use odometer_core::{time, Organization, OrganizationId, OrganizationSettings};

use crate::catalog::{ApiKey, Catalog};
use crate::error::StoreError;
use crate::keys::{hash_secret, new_api_key, SECRET_PREFIX};

/// A new organization and its first key's secret (shown once, never stored).
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub organization: Organization,
    pub key: ApiKey,
    pub secret: String,
}

/// Creates an organization with one API key.
pub async fn create_organization(
    catalog: &dyn Catalog,
    name: &str,
) -> Result<Bootstrap, StoreError> {
    let organization = Organization {
        id: OrganizationId::new(),
        name: name.to_owned(),
        settings: OrganizationSettings::default(),
        created_at: time::now(),
    };
    catalog.create_organization(&organization).await?;
    let (new_key, secret) = new_api_key(organization.id, "first key");
    catalog.create_api_key(&new_key).await?;
    Ok(Bootstrap { organization, key: new_key.key, secret })
}

/// Creates another key for an organization; returns the record and the secret to show once.
pub async fn create_api_key(
    catalog: &dyn Catalog,
    org: OrganizationId,
    name: &str,
) -> Result<(ApiKey, String), StoreError> {
    catalog.get_organization(org).await?;
    let (new_key, secret) = new_api_key(org, name);
    catalog.create_api_key(&new_key).await?;
    Ok((new_key.key, secret))
}

/// The organization a presented secret belongs to, or `None` for an unknown or revoked key.
pub async fn authenticate(
    catalog: &dyn Catalog,
    secret: &str,
) -> Result<Option<ApiKey>, StoreError> {
    // Anything without the prefix cannot be a key: skip the lookup.
    if !secret.starts_with(SECRET_PREFIX) || secret.len() > 128 {
        return Ok(None);
    }
    catalog.find_api_key(&hash_secret(secret)).await
}
