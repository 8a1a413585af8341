//! Taking a partition over: its engine at the group's committed offset, from the local
//! checkpoint or the changelog.

use super::*;

/// Brings a partition's engine to the group's committed offset when the partition is
/// assigned: from the local checkpoint when it holds the partition at that offset, else
/// from the changelog.
pub(super) struct Restorer {
    pub(super) checkpoint: Arc<Checkpoint>,
    pub(super) views: Arc<Vec<CompiledView>>,
    pub(super) view_index: HashMap<String, usize>,
    pub(super) changelog: Option<ChangelogTopic>,
    /// By view name: the short fingerprint its changelog records carry.
    pub(super) fingerprints: HashMap<String, String>,
}

/// Logs a restore's progress every few seconds and counts its records.
struct ProgressLog<'a> {
    partition: String,
    started: Instant,
    last: Instant,
    read: u64,
    metrics: &'a ProcessorMetrics,
}

impl crate::changelog::RestoreProgress for ProgressLog<'_> {
    fn read(&mut self, records: u64) {
        self.read += records;
        self.metrics.restore_records.inc_by(records);
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::info!(
                partition = self.partition.as_str(),
                records = self.read,
                per_second = (self.read as f64 / seconds) as u64,
                "restoring from the changelog"
            );
        }
    }
}

impl Restorer {
    /// The engine of `(topic, partition)` at `committed` (the group's offset; none: the
    /// partition has never been committed, so it starts empty at 0). Returns where it came
    /// from too.
    pub(super) fn restore(
        &self,
        config: &ProcessorConfig,
        metrics: &ProcessorMetrics,
        (topic, partition): (&str, i32),
        committed: Option<i64>,
    ) -> anyhow::Result<(PartitionEngine, &'static str, Option<i64>)> {
        let at = committed.unwrap_or(0);
        let local = self.checkpoint.partition_offset(topic, partition)?;
        let unconfirmed_local = local.filter(|l| committed.is_none() && *l > 0);
        let from = if local == Some(at) {
            "local"
        } else if at == 0 {
            self.checkpoint.write_restored(
                (topic, partition),
                true,
                std::iter::empty(),
                0,
                None,
            )?;
            "empty"
        } else if let Some(changelog) = &self.changelog {
            // The local state is a prefix of the committed one (this instance owned the
            // partition before another did): only what came after it is needed.
            let since = local.filter(|l| *l < at);
            let started = Instant::now();
            let mut progress = ProgressLog {
                partition: format!("{topic}/{partition}"),
                started,
                last: started,
                read: 0,
                metrics,
            };
            let restored = crate::changelog::read_partition(
                &config.brokers,
                &changelog.topic,
                (topic, partition),
                (since, at),
                &self.fingerprints,
                &mut progress,
            )?;
            metrics
                .restore_seconds
                .inc_by(restored.elapsed.as_secs_f64());
            if !restored.reaches_committed {
                bail!(
                    "the changelog {} does not hold {topic}/{partition} at the group's offset {at} \
                     (it was written by a processor without a changelog, or the topic was deleted), \
                     and the local state is at {}: the state cannot be restored. Start the \
                     deployment over with a new --group-id (and backfill), or run the instance \
                     that holds the state",
                    changelog.topic,
                    local.map_or("nothing".to_string(), |l| l.to_string()),
                );
            }
            tracing::info!(
                partition = format!("{topic}/{partition}").as_str(),
                at,
                since,
                records_read = restored.read,
                keys = restored.records.len(),
                seconds = restored.elapsed.as_secs_f64(),
                "restored from the changelog"
            );
            let clock = restored.clock(topic, partition);
            self.checkpoint.write_restored(
                (topic, partition),
                since.is_none(),
                restored.pieces(),
                at,
                clock,
            )?;
            "changelog"
        } else {
            bail!(
                "the local state holds {topic}/{partition} at {}, not at the group's offset {at}, \
                 and the changelog is off (--changelog off): the state cannot be restored. Turn \
                 the changelog on, or start over with a new --group-id",
                local.map_or("nothing".to_string(), |l| l.to_string()),
            );
        };
        self.checkpoint.flush()?;
        let saved = self
            .checkpoint
            .load_partition(topic, partition, &self.view_index)?;
        let mut engine = PartitionEngine::restore(
            self.views.clone(),
            topic,
            saved.next_offset.unwrap_or(0),
            saved.clock,
            saved.entities,
        )?;
        engine.report_unwritten_deletions(self.changelog.is_some());
        Ok((engine, from, unconfirmed_local))
    }
}
