//! The span processor of OTLP export: each finished span is encoded as it
//! ends, under a short lock, into the waiting requests' bytes, and a thread
//! of its own sends them.
//!
//! The SDK's `BatchSpanProcessor` moves every `SpanData` (some 300 bytes)
//! through a channel, out of it into a batch, and hands the batch to the
//! exporter, which plans and encodes it: three copies and a plan per span,
//! and the `SpanData` kept alive until the export. Here the span is written
//! once, where it ends, and dropped there. The schedule is the SDK's, and
//! so are the variables that tune it: an export when
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans (512) wait, or
//! `OTEL_BSP_SCHEDULE_DELAY` ms (5 000) after the last one; at most
//! `OTEL_BSP_MAX_QUEUE_SIZE` spans (2 048) wait, and a span that finds the
//! queue full is dropped and counted, never blocks the request that ended
//! it.

use std::{
    fmt,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
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

use super::otlp::{Encoded, EncodedResource, OtlpExporter, Prepared};
use crate::{Error, Result};

/// How long `force_flush` waits for the export it asks for.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How often dropped spans are logged at most.
const DROPPED_LOG_INTERVAL: Duration = Duration::from_secs(60);

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
    /// An export starts when this many spans wait.
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
    /// variables (a value that is not a positive number is ignored, as the
    /// SDK does).
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
}

struct State {
    spans: Encoded,
    resource: Arc<EncodedResource>,
    /// A full batch waits: the export thread was woken for it.
    batch_due: bool,
    /// `force_flush` callers, waiting for the next export's outcome.
    flushes: Vec<SyncSender<Outcome>>,
    /// Set by `shutdown` (with its caller, waiting) or by dropping the
    /// processor: the export thread sends what waits and stops, and
    /// spans that end later are dropped.
    stopping: bool,
    stopped_by: Option<SyncSender<Outcome>>,
    /// Spans dropped (the queue was full) since the last warning.
    dropped: u64,
}

/// An export's outcome, for every caller waiting for it.
type Outcome = std::result::Result<(), String>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
                resource: Arc::new(EncodedResource::new(&Resource::builder_empty().build())),
                batch_due: false,
                flushes: Vec::new(),
                stopping: false,
                stopped_by: None,
                dropped: 0,
            }),
            wake: Condvar::new(),
            schedule,
        });
        let worker = std::thread::Builder::new()
            .name("room619-otlp-export".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || export_loop(&shared, &exporter)
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
            if stop {
                state.stopping = true;
                state.stopped_by = Some(reply);
            } else {
                state.flushes.push(reply);
            }
        }
        self.shared.wake.notify_one();
        match outcome.recv_timeout(timeout) {
            Ok(outcome) => outcome.map_err(OTelSdkError::InternalFailure),
            Err(RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(OTelSdkError::InternalFailure(
                "the span export thread stopped".to_owned(),
            )),
        }
    }
}

impl SpanProcessor for OtlpProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let prepared = Prepared::of(&span);
        let mut state = self.shared.lock();
        if state.stopping || state.spans.len() >= self.shared.schedule.queue {
            state.dropped += 1;
            return;
        }
        state.spans.push(&span, &prepared);
        if state.spans.len() >= self.shared.schedule.batch && !state.batch_due {
            state.batch_due = true;
            drop(state);
            self.shared.wake.notify_one();
        }
        // `span` is dropped here, out of the lock.
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.export_now(false, FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.export_now(true, timeout)?;
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // It has answered: it is returning.
        if let Some(worker) = worker
            && worker.join().is_err()
        {
            return Err(OTelSdkError::InternalFailure(
                "the span export thread panicked".to_owned(),
            ));
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.shared.lock().resource = Arc::new(EncodedResource::new(resource));
    }
}

impl Drop for OtlpProcessor {
    /// Without a shutdown (the provider shuts its processors down when it
    /// is dropped), the export thread still sends what waits, then stops.
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
    }
}

/// The export thread: waits for a full batch, a flush, the shutdown or the
/// schedule's delay, then sends what waits.
fn export_loop(shared: &Shared, exporter: &OtlpExporter) {
    let mut next = Instant::now() + shared.schedule.delay;
    let mut last_dropped_warning: Option<Instant> = None;
    loop {
        let mut state = shared.lock();
        while !(state.batch_due || state.stopping || !state.flushes.is_empty()) {
            let Some(wait) = next
                .checked_duration_since(Instant::now())
                .filter(|wait| !wait.is_zero())
            else {
                break;
            };
            state = shared
                .wake
                .wait_timeout(state, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let spans = std::mem::take(&mut state.spans);
        let resource = Arc::clone(&state.resource);
        let flushes = std::mem::take(&mut state.flushes);
        let stopping = state.stopping;
        let stopped_by = state.stopped_by.take();
        state.batch_due = false;
        let dropped = warn_dropped(&mut state.dropped, &mut last_dropped_warning);
        drop(state);

        if let Some(dropped) = dropped {
            tracing::warn!(
                dropped_spans = dropped,
                max_queue_size = shared.schedule.queue,
                "spans were dropped: more finished than the export sent (raise \
                 OTEL_BSP_MAX_QUEUE_SIZE or lower the sampling ratio)"
            );
        }
        let outcome: Outcome = if spans.is_empty() {
            Ok(())
        } else {
            futures_executor::block_on(exporter.export(&spans, &resource))
                .map_err(|err| err.to_string())
        };
        next = Instant::now() + shared.schedule.delay;
        for flush in flushes.into_iter().chain(stopped_by) {
            if flush.try_send(outcome.clone()).is_err() {
                // The caller stopped waiting: nothing to tell.
            }
        }
        if stopping {
            return;
        }
    }
}

/// Takes the count of dropped spans, when there is one and none was logged
/// in the last [`DROPPED_LOG_INTERVAL`].
fn warn_dropped(dropped: &mut u64, last: &mut Option<Instant>) -> Option<u64> {
    let now = Instant::now();
    if *dropped == 0 || last.is_some_and(|at| now.duration_since(at) < DROPPED_LOG_INTERVAL) {
        return None;
    }
    *last = Some(now);
    Some(std::mem::take(dropped))
}

#[cfg(test)]
mod tests;
