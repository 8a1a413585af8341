//! Freshet's schema registry: the Confluent Schema Registry REST API, so that existing
//! Avro clients work unchanged, with schemas kept in a durable journal on disk.
//!
//! - [`auth`]: optional basic auth, users with read or write roles from a file.
//! - [`api`]: the routes and handlers (register, look up, fetch by id, list, delete,
//!   config, compatibility), JSON in the `application/vnd.schemaregistry.v1+json` type.
//! - [`error`]: every error with Confluent's status and `error_code`.
//! - [`compat`]: compatibility levels (NONE, BACKWARD, FORWARD, FULL and the transitive
//!   forms) decided by apache-avro's schema resolution rules.
//! - [`store`]: the state and its append-only journal, replayed on start.
//!
//! Ids are global and never reused; registering the same schema again (under any subject)
//! returns the same id.

pub mod api;
pub mod auth;
pub mod compat;
pub mod error;
pub mod store;

use std::future::Future;
use std::path::Path;
use tokio::net::TcpListener;

/// Default limit on request bodies: large enough for any real schema.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Serves the registry on `listener` until `shutdown` completes; with `users`, every
/// request but `/health` needs one of them.
pub async fn serve(
    listener: TcpListener,
    journal: &Path,
    max_body_bytes: usize,
    users: Option<auth::Users>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = store::Store::open(journal)?;
    tracing::info!(
        journal = %journal.display(),
        schemas = store.state.schemas.len(),
        subjects = store.state.subjects.len(),
        "schema journal loaded"
    );
    let mut app = api::router(store, max_body_bytes);
    if let Some(users) = users {
        app = app.layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(users),
            auth::require_user,
        ));
    }
    let app = app
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                api::reply(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    &serde_json::json!({"error_code": 50001, "message": "Internal error"}),
                )
            },
        ));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
