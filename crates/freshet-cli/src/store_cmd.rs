//! `freshet store migrate`: moves feature values stored in the previous Redis layout
//! (one hash per view and entity, `fv:{view}:{id}`) into entity hashes (`fe:{entity}:{id}`,
//! all of an entity's views in one hash; see `freshet_core::store_layout`), which this
//! version's processor, backfill and serving API use. Nothing is lost: values are written
//! with the versioned write (a newer value already there is kept) and a legacy hash is
//! deleted only once its values are in the entity hash. Safe to run again.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use freshet_core::store_layout::ViewStorage;
use freshet_service::{RedisArgs, StackEnv};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Move values from the previous layout (`fv:{view}:{id}` hashes) into entity hashes.
    /// Stop processors of older versions first; this version's may keep running.
    Migrate(MigrateArgs),
}

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    redis: RedisArgs,
    /// Folder of the local stack whose stack.env supplies default addresses.
    #[arg(long, env = "FRESHET_STATE_DIR", default_value = freshet_service::DEFAULT_STACK_DIR)]
    state_dir: PathBuf,
}

pub fn run(command: StoreCommand, features_dir: &Path) -> Result<ExitCode> {
    let StoreCommand::Migrate(args) = command;
    let definitions = freshet_core::load_dir(features_dir)?;
    let views: HashMap<String, ViewStorage> = definitions
        .views
        .iter()
        .map(|v| (v.name.clone(), ViewStorage::of(v)))
        .collect();
    args.redis.install_ca_certificate()?;
    let url = args.redis.resolve(&StackEnv::load(&args.state_dir));
    // What messages show: without a password.
    let shown = freshet_store::redacted_url(&url);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let client = freshet_store::tls::client(url.as_str())
            .with_context(|| format!("invalid Redis URL {shown}"))?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("cannot connect to Redis at {shown}"))?;
        let started = Instant::now();
        freshet_store::migrate_legacy(
            &mut connection,
            &views,
            |so_far| {
                let rate = so_far.scanned as f64 / started.elapsed().as_secs_f64().max(1e-3);
                eprintln!(
                    "migrating: {} legacy hashes looked at, {} moved ({rate:.0}/s)",
                    so_far.scanned, so_far.moved
                );
            },
            |key, why| eprintln!("warning: left {key} in place: {why}"),
        )
        .await
        .with_context(|| format!("migrating the feature values in {shown}"))
    })?;
    println!(
        "migrated {shown}: {} legacy hashes moved into entity hashes, {} already held there at a newer version (deleted), {} left in place ({} of views not in the definitions, {} unreadable, {} rewritten meanwhile)",
        report.moved,
        report.already_newer,
        report.unknown_view + report.unreadable + report.changed_meanwhile,
        report.unknown_view,
        report.unreadable,
        report.changed_meanwhile
    );
    Ok(if report.unreadable + report.changed_meanwhile > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
