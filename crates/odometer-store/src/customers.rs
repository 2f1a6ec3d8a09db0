//! Customer operations over any [`Catalog`]: create and patch with validation.

use serde_json::Value;

use odometer_core::customer::{apply_customer_patch, parse_customer_spec};
use odometer_core::{time, Customer, OrganizationId, Problems};

use crate::catalog::Catalog;
use crate::error::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("{0}")]
    Invalid(Problems),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CustomerError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(problems) => problems.first_code(),
            Self::Store(e) => e.code(),
        }
    }
}

pub async fn create_customer(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: &Value,
) -> Result<Customer, CustomerError> {
    let spec = parse_customer_spec(definition).map_err(CustomerError::Invalid)?;
    let customer = Customer::new(org, spec, time::now());
    catalog.create_customer(&customer).await?;
    Ok(customer)
}

pub async fn update_customer(
    catalog: &dyn Catalog,
    org: OrganizationId,
    external_id: &str,
    patch: &Value,
) -> Result<Customer, CustomerError> {
    let current = catalog.get_customer(org, external_id).await?;
    let spec = apply_customer_patch(&current.spec, patch).map_err(CustomerError::Invalid)?;
    if spec == current.spec {
        return Ok(current);
    }
    Ok(catalog.update_customer(org, external_id, &spec, time::now()).await?)
}
