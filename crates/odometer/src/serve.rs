//! `odometer serve`: opens the store, makes sure an organization exists (printing the first
//! key once), and serves HTTP until SIGINT or SIGTERM (and `/metrics` on `metrics_listen`).

use anyhow::Context;
use odometer_api::AppState;
use odometer_store::tenants;

use crate::commands::{open_catalog, open_event_store, print_bootstrap};
use crate::config::Config;
use crate::telemetry;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let addr = config.listen_addr()?;
    if let Some(metrics_addr) = config.metrics_addr()? {
        let listener = telemetry::bind(metrics_addr).await?;
        let handle = telemetry::install()?;
        let embedded_dir = config.events.is_none().then(|| config.data_dir.clone());
        let local = listener.local_addr()?;
        tracing::info!(address = %local, "metrics at /metrics");
        eprintln!("odometer metrics on http://{local}/metrics");
        tokio::spawn(async move {
            if let Err(err) = telemetry::serve(listener, handle, embedded_dir).await {
                tracing::error!(err = format!("{err:#}"), "the metrics endpoint stopped");
            }
        });
    }
    let catalog = open_catalog(config).await?;
    if catalog.list_organizations().await?.is_empty() {
        let bootstrap = tenants::create_organization(catalog.as_ref(), "default").await?;
        print_bootstrap(&bootstrap);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let stores = config.describe_stores();
    tracing::info!(address = %local, stores, "odometer is listening");
    eprintln!("odometer listening on http://{local} ({stores})");
    let events = open_event_store(config).await?.as_dyn();
    // The usage index keeps state for every current metric definition: those it does not have
    // yet (after a crash, or metrics changed offline) are built in the background.
    odometer_store::usage_index::sync_all(catalog.as_ref(), events.as_ref())
        .await
        .context("cannot give the usage index the metric definitions")?;
    let state = AppState { catalog, events };
    axum::serve(listener, odometer_api::app_with(state, config.limits()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server error")?;
    tracing::info!("odometer stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
