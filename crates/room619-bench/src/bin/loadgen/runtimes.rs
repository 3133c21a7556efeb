//! The runtime(s) the servers, the traced node and the load generator run
//! on, and which threads count as the servers'.

use room619_bench::{BoxError, cpu::ThreadCpu};
use tokio::runtime::Runtime;

use crate::cli::RuntimeMode;

/// Why `--traced` refuses a shared runtime.
pub(crate) const TRACED_NEEDS_SPLIT: &str =
    "--traced needs --runtime split (the load would be traced too)";

/// The name of the servers' runtime threads.
const SERVER_THREADS: &str = "bench-server";

/// The name of the load generator's runtime threads.
const LOAD_THREADS: &str = "bench-load";

/// The name of room619's span-export thread (`--traced`).
const EXPORT_THREAD: &str = "room619-otlp-export";

/// The runtime(s) the servers and the load generator run on.
pub(crate) struct Runtimes {
    server: Runtime,
    /// The servers' threads, whose CPU time is theirs alone in split mode.
    server_cpu: ThreadCpu,
    /// The load generator's threads (the open-loop pacer's ends with its
    /// run and reports its own).
    load_cpu: ThreadCpu,
    /// The load generator's own runtime, in split mode.
    client: Option<Runtime>,
    /// The room619 node's own runtime, its threads logging and tracing into
    /// a subscriber (`--traced`); named as the servers' threads, so that
    /// their CPU time counts as the servers'.
    observed: Option<Runtime>,
    threads: usize,
}

impl Runtimes {
    pub(crate) fn new(
        mode: RuntimeMode,
        threads: Option<u32>,
        dispatch: Option<tracing::Dispatch>,
    ) -> Result<Self, BoxError> {
        let threads = match (threads, mode) {
            (Some(threads), _) => usize::try_from(threads)?,
            (None, RuntimeMode::Shared) => std::thread::available_parallelism()?.get(),
            (None, RuntimeMode::Split) => 1,
        };
        let build = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
        };
        let observed = match (dispatch, mode) {
            (None, _) => None,
            (Some(_), RuntimeMode::Shared) => {
                return Err(TRACED_NEEDS_SPLIT.into());
            }
            (Some(dispatch), RuntimeMode::Split) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name(SERVER_THREADS)
                    .on_thread_start(move || {
                        // The runtime's threads keep it for their whole life.
                        std::mem::forget(tracing::dispatcher::set_default(&dispatch));
                    })
                    .enable_all()
                    .build()?,
            ),
        };
        Ok(Self {
            server: build(SERVER_THREADS)?,
            // When traced, the exporter's thread works for the node too.
            server_cpu: if observed.is_some() {
                ThreadCpu::named(SERVER_THREADS).and_named(EXPORT_THREAD)
            } else {
                ThreadCpu::named(SERVER_THREADS)
            },
            client: match mode {
                RuntimeMode::Shared => None,
                RuntimeMode::Split => Some(build(LOAD_THREADS)?),
            },
            load_cpu: ThreadCpu::named(LOAD_THREADS),
            observed,
            threads,
        })
    }

    pub(crate) fn server(&self) -> &Runtime {
        &self.server
    }

    /// Where the room619 node runs: on a runtime of its own when observed.
    pub(crate) fn room619(&self) -> &Runtime {
        self.observed.as_ref().unwrap_or(&self.server)
    }

    /// The servers' threads, when nothing else runs on them (split mode).
    pub(crate) fn server_cpu(&self) -> Option<&ThreadCpu> {
        self.client.as_ref().map(|_| &self.server_cpu)
    }

    /// The load generator's threads, when nothing else runs on them (split
    /// mode).
    pub(crate) fn load_cpu(&self) -> Option<&ThreadCpu> {
        self.client.as_ref().map(|_| &self.load_cpu)
    }

    pub(crate) fn client(&self) -> &Runtime {
        self.client.as_ref().unwrap_or(&self.server)
    }

    pub(crate) fn describe(&self) -> String {
        match (&self.client, &self.observed) {
            (None, _) => format!("shared ({} worker threads)", self.threads),
            (Some(_), None) => format!(
                "split ({} worker thread(s) for the servers, {} for the load)",
                self.threads, self.threads
            ),
            (Some(_), Some(_)) => format!(
                "split ({n} worker thread(s) for bare, {n} for the traced room619 node, \
                 {n} for the load, 1 for the OTLP receiver)",
                n = self.threads
            ),
        }
    }
}
