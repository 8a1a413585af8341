//! How a lookup's entities are read: from the near cache where it holds them and is
//! confirmed fresh, else from Redis in one pipelined round trip, within the request's
//! latency budget. Shared by every lookup endpoint (single, batch, Feast's protocol).

use crate::api::{now_ms, AppState};
use crate::error::ApiError;
use crate::lookup::{Selection, Tally};
use crate::near_cache::{NearCache, Ticket};
use freshet_store::RawFields;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads the selected views of every entity and hands each entity's reads to `each`, in
/// request order, with the lookup's time and tally (recorded in the per-view metrics at
/// the end). Entities the near cache holds (when it is on and confirmed fresh) are not
/// read; the others are read in one pipelined round trip. Reads that have not arrived
/// when `budget` runs out are handed over as timed out (status `timeout`). If the read
/// fails, what `each` was given must be discarded.
pub async fn read_entities(
    state: &AppState,
    selection: &Selection<'_>,
    entities: &[String],
    budget: Option<Duration>,
    mut each: impl FnMut(&str, &[RawFields], i64, &mut Tally),
) -> Result<(), ApiError> {
    let mut tally = selection.tally();
    let now = now_ms();
    let started = Instant::now();
    match state.cache.as_deref().filter(|c| c.usable()) {
        Some(cache) => {
            read_through_cache(state, cache, selection, entities, budget, |id, read| {
                each(id, read, now, &mut tally)
            })
            .await?
        }
        None => {
            if let Some(cache) = &state.cache {
                // On, but not confirmed fresh: every read is a miss.
                cache.missed((entities.len() * selection.reads_per_entity()) as u64);
            }
            read_from_store(state, selection, entities, budget, |id, read| {
                each(id, read, now, &mut tally)
            })
            .await?
        }
    }
    selection.record(&tally, started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `read` within `budget` (if any); `Ok(false)` when the budget ran out first.
async fn within<F: std::future::Future<Output = Result<(), crate::store::StoreError>>>(
    state: &AppState,
    budget: Option<Duration>,
    read: F,
) -> Result<bool, ApiError> {
    let done = match budget {
        Some(budget) => match tokio::time::timeout(budget, read).await {
            Ok(done) => done,
            Err(_) => return Ok(false),
        },
        None => read.await,
    };
    done.inspect_err(|_| state.metrics.store_errors.inc())?;
    Ok(true)
}

/// Every entity read from Redis (the selected fields only), each handed over as soon as
/// its reads have arrived.
async fn read_from_store(
    state: &AppState,
    selection: &Selection<'_>,
    entities: &[String],
    budget: Option<Duration>,
    mut each: impl FnMut(&str, &[RawFields]),
) -> Result<(), ApiError> {
    let reads = selection.reads(entities);
    let per_entity = selection.reads_per_entity();
    let mut pending = Vec::with_capacity(per_entity);
    let mut ids = entities.iter();
    let read = state.store.read_each(&reads, |fields| {
        pending.push(fields);
        if pending.len() < per_entity {
            return;
        }
        let id = ids.next().expect("one entity per `per_entity` reads");
        each(id, &pending);
        pending.clear();
    });
    if !within(state, budget, read).await? {
        // The budget ran out: the entities not read yet get `timeout`.
        let timed_out = vec![RawFields::timed_out(); per_entity];
        for id in ids {
            each(id, &timed_out);
        }
    }
    Ok(())
}

/// Entities the near cache holds served from it; the others read from Redis (every field
/// of their hash, so the cache can answer any later selection) and stored in it.
async fn read_through_cache(
    state: &AppState,
    cache: &NearCache,
    selection: &Selection<'_>,
    entities: &[String],
    budget: Option<Duration>,
    mut each: impl FnMut(&str, &[RawFields]),
) -> Result<(), ApiError> {
    let per_entity = selection.reads_per_entity();
    let mut reads: Vec<Option<RawFields>> = vec![None; entities.len() * per_entity];
    let mut misses: Vec<(String, &[&str])> = Vec::new();
    let mut tickets: Vec<(usize, Ticket)> = Vec::new();
    for (e, entity) in entities.iter().enumerate() {
        for g in 0..per_entity {
            let key = selection.key(g, entity);
            match cache.get(&key) {
                Some(hit) => reads[e * per_entity + g] = Some(selection.project(g, &hit, true)),
                None => {
                    tickets.push((e * per_entity + g, cache.ticket(&key)));
                    misses.push((key, selection.all_fields(g)));
                }
            }
        }
    }
    if !misses.is_empty() {
        let mut arrived = 0;
        let read = state.store.read_each(&misses, |fields| {
            let (slot, ticket) = tickets[arrived];
            let fields = Arc::new(fields.compacted());
            cache.insert(misses[arrived].0.clone(), &fields, ticket);
            reads[slot] = Some(selection.project(slot % per_entity, &fields, false));
            arrived += 1;
        });
        within(state, budget, read).await?;
    }
    let reads: Vec<RawFields> = reads
        .into_iter()
        .map(|r| r.unwrap_or_else(RawFields::timed_out))
        .collect();
    for (id, read) in entities.iter().zip(reads.chunks(per_entity)) {
        each(id, read);
    }
    Ok(())
}
