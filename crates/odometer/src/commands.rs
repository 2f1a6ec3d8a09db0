//! The administrative subcommands: `init`, `organizations ...`, `keys ...` and `metrics ...`, run directly against
//! the data directory's catalog with the same rules the API applies.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use odometer_api::native::mapping;
use odometer_core::{ApiKeyId, OrganizationId};
use odometer_store::metrics::{self as metric_ops, find_metric, MetricError};
use odometer_store::tenants::{self, Bootstrap};
use odometer_store::{ArchivedFilter, Catalog, MetricListParams};
use serde_json::Value;

use crate::cli::{InitArgs, KeysCommand, MetricsCommand, OrgArg, OrganizationsCommand};
use crate::config::Config;

pub use crate::stores::{open_catalog, open_event_store};

/// Prints a new organization's first key: the only time the secret is ever shown.
pub fn print_bootstrap(bootstrap: &Bootstrap) {
    println!(
        "Created organization {} ({}).",
        bootstrap.organization.id, bootstrap.organization.name
    );
    println!("Its API key (shown once, store it now):");
    println!();
    println!("    {}", bootstrap.secret);
    println!();
}

pub async fn init(config: &Config, args: &InitArgs) -> anyhow::Result<()> {
    let catalog = open_catalog(config).await?;
    let existing = catalog.list_organizations().await?;
    if let Some(first) = existing.first() {
        bail!(
            "{} is already initialized (organization {}); use `odometer keys create` for another key",
            config.data_dir().display(),
            first.id
        );
    }
    let bootstrap = tenants::create_organization(catalog.as_ref(), &args.name).await?;
    print_bootstrap(&bootstrap);
    Ok(())
}

pub async fn organizations(config: &Config, command: OrganizationsCommand) -> anyhow::Result<()> {
    let catalog = open_catalog(config).await?;
    match command {
        OrganizationsCommand::Create { name } => {
            let bootstrap = tenants::create_organization(catalog.as_ref(), &name).await?;
            print_bootstrap(&bootstrap);
        }
        OrganizationsCommand::List => {
            println!("{:<27} {:<20} NAME", "ID", "CREATED");
            for org in catalog.list_organizations().await? {
                println!(
                    "{:<27} {:<20} {}",
                    org.id.to_string(),
                    org.created_at.format("%Y-%m-%d %H:%M:%S"),
                    org.name
                );
            }
        }
    }
    Ok(())
}

/// The organization a command acts for: the one named, or the only one there is.
async fn organization(catalog: &dyn Catalog, arg: &OrgArg) -> anyhow::Result<OrganizationId> {
    if let Some(text) = &arg.org {
        let id: OrganizationId = text.parse()?;
        catalog.get_organization(id).await?;
        return Ok(id);
    }
    let orgs = catalog.list_organizations().await?;
    match orgs.as_slice() {
        [] => bail!("no organization yet: run `odometer init` (or `odometer serve`) first"),
        [only] => Ok(only.id),
        _ => bail!("this data directory has {} organizations; name one with --org", orgs.len()),
    }
}

pub async fn keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let catalog = open_catalog(config).await?;
    match command {
        KeysCommand::Create { org, name } => {
            let org = organization(catalog.as_ref(), &org).await?;
            let (key, secret) = tenants::create_api_key(catalog.as_ref(), org, &name).await?;
            println!("Created key {} ({}) for {org}. Its secret (shown once):", key.id, key.name);
            println!();
            println!("    {secret}");
            println!();
        }
        KeysCommand::List { org, json } => {
            let org = organization(catalog.as_ref(), &org).await?;
            let keys = catalog.list_api_keys(org).await?;
            if json {
                let rows: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "id": k.id.to_string(), "name": k.name, "prefix": k.prefix,
                            "created_at": odometer_core::time::format_micros(&k.created_at),
                            "last_used_at": k.last_used_at.as_ref().map(odometer_core::time::format_micros),
                            "revoked_at": k.revoked_at.as_ref().map(odometer_core::time::format_micros),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<27} {:<14} {:<20} {:<10} NAME", "ID", "PREFIX", "CREATED", "STATE");
                for k in keys {
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    println!(
                        "{:<27} {:<14} {:<20} {:<10} {}",
                        k.id.to_string(),
                        format!("{}...", k.prefix),
                        k.created_at.format("%Y-%m-%d %H:%M:%S"),
                        state,
                        k.name
                    );
                }
            }
        }
        KeysCommand::Revoke { org, key_id } => {
            let org = organization(catalog.as_ref(), &org).await?;
            let id: ApiKeyId = key_id.parse()?;
            let key = catalog.revoke_api_key(org, id).await?;
            println!("Revoked key {} ({}).", key.id, key.name);
        }
    }
    Ok(())
}

/// Reads a JSON document from a file, or from standard input for `-` or no file.
fn read_json(file: Option<&Path>) -> anyhow::Result<Value> {
    let mut text = String::new();
    let source = match file {
        Some(path) if path != Path::new("-") => {
            text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            path.display().to_string()
        }
        _ => {
            std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
            "standard input".to_owned()
        }
    };
    serde_json::from_str(&text).with_context(|| format!("{source} is not valid JSON"))
}

/// Turns a metric error into a message that lists every problem.
fn explain(err: MetricError) -> anyhow::Error {
    match err {
        MetricError::Invalid(problems) => {
            let lines: Vec<String> = problems
                .iter()
                .map(|p| {
                    let path = if p.path.is_empty() { "(document)" } else { p.path.as_str() };
                    format!("  {path}: {} [{}]", p.message, p.code)
                })
                .collect();
            anyhow!("invalid metric definition:\n{}", lines.join("\n"))
        }
        other => anyhow!("{other} [{}]", other.code()),
    }
}

fn print_metric(metric: &odometer_core::Metric) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&mapping::metric(metric))?);
    Ok(())
}

pub async fn metrics(config: &Config, command: MetricsCommand) -> anyhow::Result<()> {
    let catalog = open_catalog(config).await?;
    let catalog: &dyn Catalog = catalog.as_ref();
    match command {
        MetricsCommand::List { org, search, archived, json } => {
            let org = organization(catalog, &org).await?;
            let archived = match archived.as_str() {
                "false" => ArchivedFilter::Active,
                "true" => ArchivedFilter::Archived,
                "all" => ArchivedFilter::All,
                other => bail!("--archived must be true, false or all, not '{other}'"),
            };
            let mut params = MetricListParams { search, archived, limit: 1000, cursor: None };
            let mut all = Vec::new();
            loop {
                let page = catalog.list_metrics(org, &params).await?;
                all.extend(page.items);
                match page.next_cursor {
                    Some(cursor) => params.cursor = Some(cursor),
                    None => break,
                }
            }
            if json {
                let rows: Vec<_> = all.iter().map(mapping::metric).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<26} {:<24} {:<14} {:>4}  NAME", "ID", "CODE", "AGGREGATION", "REV");
                for m in &all {
                    let archived = if m.archived_at.is_some() { " (archived)" } else { "" };
                    println!(
                        "{:<26} {:<24} {:<14} {:>4}  {}{archived}",
                        m.id.to_string(),
                        m.spec.code,
                        m.spec.aggregation.kind.as_str(),
                        m.revision,
                        m.spec.name
                    );
                }
            }
        }
        MetricsCommand::Get { org, id_or_code } => {
            let org = organization(catalog, &org).await?;
            print_metric(&find_metric(catalog, org, &id_or_code).await?)?;
        }
        MetricsCommand::Create { org, file } => {
            let org = organization(catalog, &org).await?;
            let definition = read_json(file.as_deref())?;
            let metric =
                metric_ops::create_metric(catalog, org, &definition).await.map_err(explain)?;
            print_metric(&metric)?;
        }
        MetricsCommand::Update { org, id_or_code, file } => {
            let org = organization(catalog, &org).await?;
            let patch = read_json(file.as_deref())?;
            let metric = metric_ops::update_metric(catalog, org, &id_or_code, &patch)
                .await
                .map_err(explain)?;
            print_metric(&metric)?;
        }
    }
    Ok(())
}
