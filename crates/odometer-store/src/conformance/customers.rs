//! Conformance: customers, their unique external ids and their lists.

use serde_json::{json, Value};

use odometer_core::customer::parse_customer_spec;
use odometer_core::{time, Customer, CustomerId, CustomerSpec, OrganizationId};

use super::{assert_error, assert_not_found, new_organization};
use crate::catalog::{Catalog, CustomerListParams, Page};
use crate::error::{Entity, StoreError};

fn customer_spec(definition: Value) -> CustomerSpec {
    parse_customer_spec(&definition)
        .unwrap_or_else(|problems| panic!("invalid test customer {definition}: {problems}"))
}

async fn create_customer(
    catalog: &dyn Catalog,
    org: OrganizationId,
    definition: Value,
) -> Customer {
    let now = time::now();
    let customer = Customer {
        id: CustomerId::new(),
        organization_id: org,
        spec: customer_spec(definition),
        created_at: now,
        updated_at: now,
    };
    catalog.create_customer(&customer).await.expect("create_customer");
    customer
}

/// External ids of every listed customer, following the cursors; also answers the page sizes.
async fn list_all(
    catalog: &dyn Catalog,
    org: OrganizationId,
    search: Option<&str>,
    limit: u32,
) -> (Vec<String>, Vec<usize>) {
    let mut params = CustomerListParams { search: search.map(str::to_owned), limit, cursor: None };
    let (mut ids, mut sizes) = (Vec::new(), Vec::new());
    loop {
        let page = catalog.list_customers(org, &params).await.expect("list_customers");
        sizes.push(page.items.len());
        ids.extend(page.items.into_iter().map(|c| c.spec.external_id));
        assert!(sizes.len() < 100, "paging does not end");
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => return (ids, sizes),
        }
    }
}

pub async fn customers_are_created_read_updated_and_deleted(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let customer = create_customer(
        catalog,
        org.id,
        json!({
            "external_id": "acme",
            "name": "Acme",
            "email": "billing@acme.test",
            "timezone": "Europe/Paris",
            "metadata": {"tier": "gold", "seats": 12, "nested": {"b": [1, 2], "a": null}}
        }),
    )
    .await;
    assert_eq!(catalog.get_customer(org.id, "acme").await.unwrap(), customer, "get by external id");
    assert_not_found(catalog.get_customer(org.id, "ACME").await, Entity::Customer, "exact ids");
    assert_not_found(catalog.get_customer(org.id, "nobody").await, Entity::Customer, "unknown");

    let spec = customer_spec(json!({"external_id": "acme", "name": "Acme Corp"}));
    let updated_at = time::now();
    let updated = catalog.update_customer(org.id, "acme", &spec, updated_at).await.unwrap();
    assert_eq!(updated.spec, spec, "update replaces the whole definition");
    assert_eq!(updated.updated_at, updated_at);
    assert_eq!((updated.id, updated.created_at), (customer.id, customer.created_at));
    assert_eq!(catalog.get_customer(org.id, "acme").await.unwrap(), updated);

    let moved = customer_spec(json!({"external_id": "acme-2", "name": "Acme Corp"}));
    let renamed = catalog.update_customer(org.id, "acme", &moved, time::now()).await.unwrap();
    assert_eq!(renamed.id, customer.id, "changing the external id keeps the customer");
    assert_eq!(catalog.get_customer(org.id, "acme-2").await.unwrap(), renamed);
    assert_not_found(catalog.get_customer(org.id, "acme").await, Entity::Customer, "old id");
    assert_not_found(
        catalog.update_customer(org.id, "acme", &moved, time::now()).await,
        Entity::Customer,
        "update by the old id",
    );

    let deleted = catalog.delete_customer(org.id, "acme-2").await.unwrap();
    assert_eq!(deleted.id, customer.id, "delete answers the customer");
    assert_not_found(catalog.get_customer(org.id, "acme-2").await, Entity::Customer, "deleted");
    assert_not_found(catalog.delete_customer(org.id, "acme-2").await, Entity::Customer, "twice");
    assert_not_found(
        catalog.update_customer(org.id, "acme-2", &moved, time::now()).await,
        Entity::Customer,
        "update a deleted customer",
    );
    let (listed, _) = list_all(catalog, org.id, None, 100).await;
    assert_eq!(listed, Vec::<String>::new(), "deleted customers are not listed");
}

pub async fn customer_external_ids_are_unique_among_live_customers(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let other = new_organization(catalog, "Other").await;
    let first = create_customer(catalog, org.id, json!({"external_id": "c1", "name": "One"})).await;
    let duplicate = Customer {
        id: CustomerId::new(),
        organization_id: org.id,
        spec: customer_spec(json!({"external_id": "c1", "name": "Impostor"})),
        created_at: time::now(),
        updated_at: time::now(),
    };
    assert_error(
        catalog.create_customer(&duplicate).await,
        StoreError::ExternalIdTaken { external_id: "c1".to_owned() },
        "a second live customer with the same external id",
    );
    assert_eq!(catalog.get_customer(org.id, "c1").await.unwrap(), first, "the first one stays");
    create_customer(catalog, other.id, json!({"external_id": "c1"})).await;

    let second = create_customer(catalog, org.id, json!({"external_id": "c2"})).await;
    let taken = customer_spec(json!({"external_id": "c1", "name": "Two"}));
    assert_error(
        catalog.update_customer(org.id, "c2", &taken, time::now()).await,
        StoreError::ExternalIdTaken { external_id: "c1".to_owned() },
        "an update may not take a live customer's external id",
    );
    assert_eq!(catalog.get_customer(org.id, "c2").await.unwrap(), second, "nothing changed");

    catalog.delete_customer(org.id, "c1").await.unwrap();
    let reborn =
        create_customer(catalog, org.id, json!({"external_id": "c1", "name": "New"})).await;
    assert_ne!(reborn.id, first.id);
    assert_eq!(catalog.get_customer(org.id, "c1").await.unwrap(), reborn, "deleting frees the id");
    catalog.delete_customer(org.id, "c1").await.unwrap();
    let moved = catalog.update_customer(org.id, "c2", &taken, time::now()).await.unwrap();
    assert_eq!(moved.spec.external_id, "c1", "a freed external id can be taken by an update");
}

pub async fn customer_lists_page_and_search(catalog: &dyn Catalog) {
    let org = new_organization(catalog, "Acme").await;
    let params = CustomerListParams { search: None, limit: 10, cursor: None };
    let empty = catalog.list_customers(org.id, &params).await.unwrap();
    assert_eq!(empty, Page { items: vec![], next_cursor: None }, "an empty list");

    let mut created = Vec::new();
    for (external_id, name, email) in [
        ("z-last-by-text", "Zeta", "z@zeta.test"),
        ("acme", "Acme Corp", "billing@acme.test"),
        ("100%", "Percent", "p@p.test"),
        ("a_b", "Underscore", "u@u.test"),
        ("axb", "Société Générale", "sg@SG.test"),
    ] {
        let definition = json!({"external_id": external_id, "name": name, "email": email});
        created.push(create_customer(catalog, org.id, definition).await);
    }
    let all: Vec<String> = created.iter().map(|c| c.spec.external_id.clone()).collect();
    let (listed, sizes) = list_all(catalog, org.id, None, 2).await;
    assert_eq!(listed, all, "customers are listed oldest first, each once");
    assert_eq!(sizes, [2, 2, 1], "5 customers in pages of 2");
    let (_, sizes) = list_all(catalog, org.id, None, 5).await;
    assert_eq!(sizes, [5], "a page that ends at the last customer has no next cursor");

    let page = catalog
        .list_customers(org.id, &CustomerListParams { search: None, limit: 100, cursor: None })
        .await
        .unwrap();
    assert_eq!(page.items, created, "listed customers are as stored");

    let cases: [(&str, &[&str]); 7] = [
        ("ACME", &["acme"]),
        ("sg.TEST", &["axb"]),
        ("SOCIÉTÉ", &["axb"]),
        ("%", &["100%"]),
        ("a_b", &["a_b"]),
        ("zeta", &["z-last-by-text"]),
        ("missing", &[]),
    ];
    for (search, expected) in cases {
        let (found, _) = list_all(catalog, org.id, Some(search), 10).await;
        assert_eq!(found, expected, "search {search:?} (case-insensitive, id, name and email)");
    }
    let (found, sizes) = list_all(catalog, org.id, Some(".test"), 3).await;
    assert_eq!((found.len(), sizes), (5, vec![3, 2]), "a search pages like a full list");
}
