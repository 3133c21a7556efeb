//! The span processor of OTLP export: each finished span is encoded as it
//! ends, on the thread that ended it, then appended under a short lock to
//! the bytes waiting for export; a thread of the processor's own sends them.
//!
//! The SDK's `BatchSpanProcessor` moves every `SpanData` (some 300 bytes)
//! through a channel, out of it into a batch, and hands the batch to the
//! exporter, which plans and encodes it: three copies and a plan per span,
//! and the `SpanData` kept alive until the export, then freed on another
//! thread. Here the span is written once, where it ends, and dropped there.
//! The schedule is the SDK's, and so are the variables that tune it: an
//! export when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans (512) wait, or
//! `OTEL_BSP_SCHEDULE_DELAY` ms (5 000) after the last one, in requests of
//! at most that many spans (and 4 MiB); at most `OTEL_BSP_MAX_QUEUE_SIZE`
//! spans (2 048) wait. A span that finds the queue full, or that is larger
//! than a request may be, is dropped and counted (logged at most once a
//! minute, and at shutdown); it never blocks the request that ended it.
//! Unlike the SDK, a value that is not a positive number is ignored (the
//! SDK takes a queue of 0, which drops every span). `force_flush` waits at
//! most 10 s; each request may take 10 s (`Telemetry`'s export timeout).
//! Exports run on the tokio runtime the exporter was made in: a node's.

use std::{
    cell::Cell,
    fmt,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError, SyncSender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanProcessor},
};

use super::otlp::{Encoded, EncodedResource, MAX_REQUEST, OtlpExporter, Prepared};
use crate::{Error, Result};

/// How long `force_flush` waits for the export it asks for.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How often dropped spans are logged at most.
const DROPPED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The largest span record kept: what a request may hold, less room for
/// the resource and the scope around it.
const MAX_SPAN: usize = MAX_REQUEST - 64 * 1024;

/// Encodes finished spans and exports them with OTLP over gRPC, from a
/// thread of its own.
pub(crate) struct OtlpProcessor {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for OtlpProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpProcessor")
            .field("schedule", &self.shared.schedule)
            .finish_non_exhaustive()
    }
}

/// When spans are exported, and how many may wait.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// An export starts when this many spans wait; a request holds at
    /// most this many.
    batch: usize,
    /// Spans beyond this many waiting are dropped.
    queue: usize,
    /// An export starts at the latest this long after the last.
    delay: Duration,
}

impl Schedule {
    /// The SDK's defaults, or what its `OTEL_BSP_*` variables say.
    fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The SDK's defaults, or what `var` says of its `OTEL_BSP_*`
    /// variables; a value that is not a positive number is ignored.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str| {
            var(name)
                .and_then(|value| value.trim().parse::<u64>().ok())
                .filter(|&value| value > 0)
        };
        let count = |name: &str, default: usize| {
            read(name).map_or(default, |value| {
                usize::try_from(value).unwrap_or(usize::MAX)
            })
        };
        let queue = count("OTEL_BSP_MAX_QUEUE_SIZE", 2_048);
        Self {
            batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512).min(queue),
            queue,
            delay: Duration::from_millis(read("OTEL_BSP_SCHEDULE_DELAY").unwrap_or(5_000)),
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread: a batch is full, a flush or the shutdown
    /// is asked for.
    wake: Condvar,
    schedule: Schedule,
    /// Whether a span ending now would be dropped (the queue is full, or
    /// the processor stopping), as of the last change under the lock: read
    /// before a span is encoded, so a dropped one is not encoded first.
    refusing: AtomicBool,
}

struct State {
    spans: Encoded,
    /// The last export's buffers, cleared, for the next spans.
    spare: Option<Encoded>,
    resource: Arc<EncodedResource>,
    /// A full batch waits: the export thread was woken for it.
    batch_due: bool,
    /// `force_flush` callers, waiting for the next export's outcome.
    flushes: Vec<Flush>,
    /// Set by `shutdown` (with its caller, waiting) or by dropping the
    /// processor: the export thread sends what waits and stops, and
    /// spans that end later are dropped.
    stopping: bool,
    stopped_by: Option<SyncSender<Outcome>>,
    /// The export thread has returned (or panicked): nobody answers.
    gone: bool,
    /// Spans dropped since the last warning.
    dropped: Dropped,
}

/// A `force_flush` caller, and the failure of an export that was under way
/// when it asked (that export held spans which ended before it asked).
struct Flush {
    reply: SyncSender<Outcome>,
    earlier: Option<String>,
}

/// Spans dropped: the queue was full, or a span was larger than a request
/// may be.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Dropped {
    queue_full: u64,
    too_large: u64,
}

/// An export's outcome, for every caller waiting for it.
type Outcome = std::result::Result<(), String>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops taking spans; the export thread sends what waits and returns.
    fn stop(&self, state: &mut State) {
        state.stopping = true;
        self.refusing.store(true, Ordering::Relaxed);
    }
}

impl OtlpProcessor {
    /// A processor exporting with `exporter`, on the `OTEL_BSP_*`
    /// schedule.
    ///
    /// # Errors
    ///
    /// `Internal` when the export thread cannot be started.
    pub(crate) fn new(exporter: OtlpExporter) -> Result<Self> {
        Self::with_schedule(exporter, Schedule::from_env())
    }

    fn with_schedule(exporter: OtlpExporter, schedule: Schedule) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                spans: Encoded::default(),
                spare: None,
                resource: Arc::new(EncodedResource::new(&Resource::builder_empty().build())),
                batch_due: false,
                flushes: Vec::new(),
                stopping: false,
                stopped_by: None,
                gone: false,
                dropped: Dropped::default(),
            }),
            wake: Condvar::new(),
            schedule,
            refusing: AtomicBool::new(false),
        });
        let worker = std::thread::Builder::new()
            .name("room619-otlp-export".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let _gone = Gone(&shared);
                    export_loop(&shared, &exporter);
                }
            })
            .map_err(|err| {
                Error::internal(format!("the span export thread did not start: {err}"))
            })?;
        Ok(Self {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Asks the export thread for an export now, and waits up to `timeout`
    /// for its outcome; `stop` makes it the last.
    fn export_now(&self, stop: bool, timeout: Duration) -> OTelSdkResult {
        let (reply, outcome) = mpsc::sync_channel(1);
        {
            let mut state = self.shared.lock();
            if state.stopping {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            if state.gone {
                return Err(thread_stopped());
            }
            if stop {
                self.shared.stop(&mut state);
                state.stopped_by = Some(reply);
            } else {
                state.flushes.push(Flush {
                    reply,
                    earlier: None,
                });
            }
        }
        self.shared.wake.notify_one();
        match outcome.recv_timeout(timeout) {
            Ok(outcome) => outcome.map_err(OTelSdkError::InternalFailure),
            Err(RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(thread_stopped()),
        }
    }
}

fn thread_stopped() -> OTelSdkError {
    OTelSdkError::InternalFailure("the span export thread stopped".to_owned())
}

thread_local! {
    /// Where a span is encoded before it is appended, out of the lock.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

impl SpanProcessor for OtlpProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.shared.refusing.load(Ordering::Relaxed) {
            self.shared.lock().dropped.queue_full += 1;
            return;
        }
        let prepared = Prepared::of(&span);
        if prepared.record_len() > MAX_SPAN {
            self.shared.lock().dropped.too_large += 1;
            return;
        }
        // Encoded out of the lock, in this thread's buffer (an empty one
        // when the thread is ending).
        let mut record = SCRATCH.try_with(Cell::take).unwrap_or_default();
        record.clear();
        prepared.write(&span, &mut record);
        let mut state = self.shared.lock();
        let queue = self.shared.schedule.queue;
        if state.stopping || state.spans.len() >= queue {
            state.dropped.queue_full += 1;
        } else {
            state.spans.push(&span.instrumentation_scope, &record);
            if state.spans.len() >= queue {
                self.shared.refusing.store(true, Ordering::Relaxed);
            }
            if state.spans.len() >= self.shared.schedule.batch && !state.batch_due {
                state.batch_due = true;
                drop(state);
                self.shared.wake.notify_one();
            }
        }
        if SCRATCH.try_with(|scratch| scratch.set(record)).is_err() {
            // The thread is ending: its buffer goes with it.
        }
        // `span` is dropped here, out of the lock.
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.export_now(false, FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let outcome = self.export_now(true, timeout);
        if matches!(outcome, Err(OTelSdkError::AlreadyShutdown)) {
            return outcome;
        }
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Once it has answered, it is returning; otherwise it is left to
        // finish on its own rather than waited for past `timeout`.
        if let Some(worker) = worker
            && (outcome.is_ok() || worker.is_finished())
            && worker.join().is_err()
        {
            return Err(OTelSdkError::InternalFailure(
                "the span export thread panicked".to_owned(),
            ));
        }
        outcome
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Arc::new(EncodedResource::new(resource));
    }
}

impl Drop for OtlpProcessor {
    /// Without a shutdown (the provider shuts its processors down when it
    /// is dropped), the export thread still sends what waits, then stops.
    fn drop(&mut self) {
        self.shared.stop(&mut self.shared.lock());
        self.shared.wake.notify_one();
    }
}

/// Marks the export thread gone when it returns or panics, and lets every
/// caller still waiting know (their replies dropped).
struct Gone<'a>(&'a Shared);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.gone = true;
        state.flushes.clear();
        state.stopped_by = None;
    }
}

/// The export thread: waits for a full batch, a flush, the shutdown or the
/// schedule's delay, then sends what waits.
fn export_loop(shared: &Shared, exporter: &OtlpExporter) {
    let schedule = shared.schedule;
    // `None`: a delay too long to reach (no timed exports).
    let mut next = Instant::now().checked_add(schedule.delay);
    let mut last_dropped_warning: Option<Instant> = None;
    loop {
        let mut state = shared.lock();
        while !(state.batch_due || state.stopping || !state.flushes.is_empty()) {
            state = match next {
                None => shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(next) => {
                    let wait = next.saturating_duration_since(Instant::now());
                    if wait.is_zero() {
                        break;
                    }
                    shared
                        .wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        let spare = state.spare.take().unwrap_or_default();
        let mut spans = std::mem::replace(&mut state.spans, spare);
        shared.refusing.store(state.stopping, Ordering::Relaxed);
        let resource = Arc::clone(&state.resource);
        let flushes = std::mem::take(&mut state.flushes);
        let stopping = state.stopping;
        let stopped_by = state.stopped_by.take();
        state.batch_due = false;
        let dropped = take_dropped(&mut state.dropped, &mut last_dropped_warning, stopping);
        drop(state);

        if let Some(dropped) = dropped {
            tracing::warn!(
                queue_full = dropped.queue_full,
                too_large = dropped.too_large,
                max_queue_size = schedule.queue,
                "spans were dropped, not exported: more ended than the export sent (raise \
                 OTEL_BSP_MAX_QUEUE_SIZE or lower the sampling ratio), or a span was larger \
                 than a request may be"
            );
        }
        let outcome: Outcome = if spans.is_empty() {
            Ok(())
        } else {
            futures_executor::block_on(exporter.export(&spans, &resource, schedule.batch))
                .map_err(|err| err.to_string())
        };
        next = Instant::now().checked_add(schedule.delay);
        spans.clear();
        let mut state = shared.lock();
        state.spare = Some(spans);
        if let Err(failed) = &outcome {
            // Flushes asked for while this export ran: it held spans that
            // ended before they asked, so its failure is theirs too. Marked
            // before anyone is answered: a flush asked after an answer is
            // not told of a failure it came after.
            for flush in &mut state.flushes {
                flush.earlier.get_or_insert_with(|| failed.clone());
            }
        }
        drop(state);
        for flush in flushes {
            let outcome = match flush.earlier {
                Some(earlier) => Err(earlier),
                None => outcome.clone(),
            };
            if flush.reply.try_send(outcome).is_err() {
                // The caller stopped waiting: nothing to tell.
            }
        }
        if let Some(stopped_by) = stopped_by
            && stopped_by.try_send(outcome.clone()).is_err()
        {
            // The caller stopped waiting: nothing to tell.
        }
        if stopping {
            return;
        }
    }
}

/// Takes the counts of dropped spans, when there are some and none were
/// logged in the last [`DROPPED_LOG_INTERVAL`] (or the processor is
/// stopping: the last count is always told).
fn take_dropped(
    dropped: &mut Dropped,
    last: &mut Option<Instant>,
    stopping: bool,
) -> Option<Dropped> {
    let now = Instant::now();
    let recently = last.is_some_and(|at| now.duration_since(at) < DROPPED_LOG_INTERVAL);
    if *dropped == Dropped::default() || (recently && !stopping) {
        return None;
    }
    *last = Some(now);
    Some(std::mem::take(dropped))
}

#[cfg(test)]
mod tests;
