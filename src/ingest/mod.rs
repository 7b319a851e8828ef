//! Ingest: from a bus's reading batch to a durable row the uplink can publish.
//!
//! This room owns the step between the buses and the spool: each batch is validated (quality
//! per value, [`validation`]) against the meter's last good registers ([`RegisterMemory`]),
//! appended to the spool in one transaction per group of batches that arrived together (group
//! commit: the moment a reading counts as taken), and handed to the uplink in memory as well
//! as on disk ([`SpoolOutbox`]: fresh rows one way, acknowledgements back the other way, deleted in
//! the next group's transaction). Poll outcomes are counted in the reading-success book as
//! batches arrive.
//!
//! It never talks to a meter or the broker: batches come in on a channel, the uplink is woken
//! through a callback and reads rows through the [`Outbox`] trait defined here.
//!
//! A spool write that fails (full disk, read-only file system) never drops a batch at once: it
//! stays in memory, bounded by [`MEMORY_BACKLOG`] batches and [`MEMORY_BACKLOG_BYTES`] (the
//! oldest go first, counted per meter in the spool, durably once it can be written), and is
//! retried in chunks the spool can take ([`writer`]).

pub mod completeness;
pub mod events;
pub mod freezes;
pub mod outbox;
mod register_memory;
mod sizing;
mod spool_outbox;
pub mod validation;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

pub use outbox::{MemoryOutbox, MessageKind, Outbox, Pending};
pub use register_memory::{MeterRegisters, RegisterMemory, RegisterStore};
pub use sizing::{check_spool_room, largest_reading};
pub use spool_outbox::{FreshRows, HeldAcks, SpoolOutbox};
pub use writer::{SpoolWriter, estimated_json_bytes};

use crate::health::SuccessBook;
use crate::reading::ReadingBatch;
use crate::sync::lock;

/// Most batches kept in memory while the spool cannot be written.
pub const MEMORY_BACKLOG: usize = 20_000;

/// Most estimated JSON bytes ([`estimated_json_bytes`]) of the batches kept in memory while the
/// spool cannot be written; lower when the spool is smaller (see [`memory_backlog_bytes`]).
/// 16 MiB is ~5,000 batches of a 25-value reading with its frames: a few poll cycles of 1,000
/// meters, or hours of a few dozen; the structs take about as much again.
pub const MEMORY_BACKLOG_BYTES: u64 = 16 * 1024 * 1024;

/// Keeping more in memory than the spool can hold only makes the spool drop it once written
/// (oldest first): the in-memory bound is the spool's `max_bytes`, but never below 2 MiB (two
/// groups of [`MAX_GROUP`] of the largest readings the start check allows, ~32 KB each) nor
/// above [`MEMORY_BACKLOG_BYTES`].
pub fn memory_backlog_bytes(spool_max_bytes: u64) -> u64 {
    spool_max_bytes.clamp(2 * 1024 * 1024, MEMORY_BACKLOG_BYTES)
}

/// Most batches in one spool transaction. Past a few dozen, a bigger group saves little
/// CPU (the commit is already shared) but every batch of it is in memory at once, twice
/// (struct and JSON, ~7 KB for 25 values): with 1,000 meters answering at once, groups of
/// 256 and a bus queue of 128 held ~3 MB at the peak of each poll burst, groups of 64 still
/// ~0.6 MB.
const MAX_GROUP: usize = 32;

/// How long to wait before storing again after a failed append.
const RETRY: Duration = Duration::from_secs(5);

/// Called after every successful append: new rows are ready for the uplink.
pub type OnStored = Box<dyn Fn() + Send + Sync>;

/// The ingest task's state between two groups.
struct Pipeline {
    rx: mpsc::Receiver<ReadingBatch>,
    writer: Arc<Mutex<SpoolWriter>>,
    book: Option<Arc<Mutex<SuccessBook>>>,
    /// Received, not yet handed to the writer.
    arrived: Vec<ReadingBatch>,
    dropped_in_memory: u64,
    failing: bool,
    closed: bool,
}

/// Validates and stores batches as they come, several per transaction (see
/// [`crate::config::SpoolConfig::commit_window`]); keeps them in memory while the spool fails.
/// Returns when every bus has stopped and everything received was stored (or, stopping,
/// could not be after one more try).
pub async fn run(
    rx: mpsc::Receiver<ReadingBatch>,
    writer: SpoolWriter,
    fresh: FreshRows,
    window: Duration,
    on_stored: OnStored,
) {
    let mut p = Pipeline {
        rx,
        book: writer.book.clone(),
        writer: Arc::new(Mutex::new(writer)),
        arrived: Vec::new(),
        dropped_in_memory: 0,
        failing: false,
        closed: false,
    };
    loop {
        p.gather(window).await;
        p.count_polls();
        let unstored = lock(&p.writer).unstored.len();
        if p.arrived.is_empty() && unstored == 0 {
            if p.closed {
                return;
            }
            continue;
        }
        p.bound_backlog();
        let new = std::mem::take(&mut p.arrived);
        let w = p.writer.clone();
        match tokio::task::spawn_blocking(move || lock(&w).store(new)).await {
            Ok(Ok(rows)) => {
                fresh.add(rows);
                p.failing = false;
                on_stored();
            }
            Ok(Err(e)) => {
                p.failing = true;
                let kept = lock(&p.writer).unstored.len();
                tracing::error!(error = %e, kept_in_memory = kept, "cannot store readings; retrying");
                if p.closed {
                    tracing::error!(
                        lost = kept,
                        "stopping with readings that could not be stored"
                    );
                    return;
                }
            }
            Err(e) => {
                // A panic in the writer is a bug; what it had taken in is still in `unstored`.
                p.failing = true;
                tracing::error!(error = %e, "spool writer task failed");
            }
        }
    }
}

impl Pipeline {
    /// Waits for a batch (while the spool is failing, at most until the retry is due), then
    /// for the batches of the meters polled right after it, up to `window` and [`MAX_GROUP`].
    async fn gather(&mut self, window: Duration) {
        if !self.closed {
            let got = if self.failing {
                tokio::select! {
                    b = self.rx.recv() => b,
                    _ = tokio::time::sleep(RETRY) => None,
                }
            } else {
                self.rx.recv().await
            };
            match got {
                Some(b) => self.arrived.push(b),
                None => self.closed = self.rx.is_closed(),
            }
        }
        if !self.closed && !self.failing && !self.arrived.is_empty() && !window.is_zero() {
            let deadline = tokio::time::Instant::now() + window;
            while self.arrived.len() < MAX_GROUP {
                tokio::select! {
                    b = self.rx.recv() => match b {
                        Some(b) => self.arrived.push(b),
                        None => { self.closed = true; break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        while self.arrived.len() < MAX_GROUP {
            match self.rx.try_recv() {
                Ok(b) => self.arrived.push(b),
                Err(_) => break,
            }
        }
    }

    /// Each poll counts once, on arrival (whether or not the spool can take it).
    fn count_polls(&self) {
        if let Some(book) = &self.book {
            let now = crate::clock::now();
            let mut book = lock(book);
            for b in &self.arrived {
                book.count_poll(b, now);
            }
        }
    }

    /// Bounds what waits in memory while the spool cannot be written: the oldest go first,
    /// each counted for its meter (see [`SpoolWriter::bound_backlog`]).
    fn bound_backlog(&mut self) {
        let mut w = lock(&self.writer);
        let max_bytes = memory_backlog_bytes(w.spool_max_bytes);
        let dropped = w.bound_backlog(&mut self.arrived, MEMORY_BACKLOG, max_bytes);
        drop(w);
        if dropped > 0 {
            self.dropped_in_memory += dropped;
            tracing::error!(
                dropped,
                dropped_in_memory = self.dropped_in_memory,
                "spool unwritable for too long: oldest in-memory readings dropped (counted per \
                 meter; they never had a seq, so consumers see no gap)"
            );
        }
    }
}
