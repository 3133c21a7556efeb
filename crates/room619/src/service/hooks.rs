//! A built service's start and stop hooks, and what undoes a start that
//! failed half way.

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures_util::{FutureExt as _, future::BoxFuture};

use super::ServiceContext;
use crate::{Error, Result};

/// A start or stop hook.
pub(super) type Hook = Arc<dyn Fn(ServiceContext) -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// One hook as it was added to the builder.
#[derive(Clone)]
enum Step {
    Start(Hook),
    Stop(Hook),
    /// A start hook and the stop hook that undoes it.
    Paired {
        start: Hook,
        stop: Hook,
    },
}

/// The hooks of a service, in the order they were added.
#[derive(Clone, Default)]
pub(super) struct Hooks(Vec<Step>);

impl Hooks {
    pub(super) fn on_start(&mut self, hook: Hook) {
        self.0.push(Step::Start(hook));
    }

    pub(super) fn on_stop(&mut self, hook: Hook) {
        self.0.push(Step::Stop(hook));
    }

    pub(super) fn paired(&mut self, start: Hook, stop: Hook) {
        self.0.push(Step::Paired { start, stop });
    }

    /// Runs the start hooks in order. When one fails or panics, the stop
    /// hooks paired with those that succeeded run (in reverse) before the
    /// error is returned; when the start is dropped half way (the node's
    /// `start_timeout`), they run on a task of their own, tracked by the
    /// context's `undoing` tracker, which the node waits for.
    pub(super) fn start(&self, ctx: ServiceContext) -> BoxFuture<'static, Result<()>> {
        let steps = self.0.clone();
        Box::pin(async move {
            let mut undo = Undo {
                ctx: ctx.clone(),
                stops: Vec::new(),
            };
            for step in steps {
                let (start, stop) = match step {
                    Step::Start(start) => (start, None),
                    Step::Paired { start, stop } => (start, Some(stop)),
                    Step::Stop(_) => continue,
                };
                if let Err(err) = run_hook(&start, &ctx, "start").await {
                    undo.run().await;
                    return Err(err);
                }
                undo.stops.extend(stop);
            }
            undo.stops.clear();
            Ok(())
        })
    }

    /// Runs the stop hooks in the reverse of the order they were added,
    /// every one even when another fails; the first failure is the answer.
    pub(super) fn stop(&self, ctx: ServiceContext) -> BoxFuture<'static, Result<()>> {
        let stops: Vec<Hook> = self
            .0
            .iter()
            .rev()
            .filter_map(|step| match step {
                Step::Stop(stop) | Step::Paired { stop, .. } => Some(Arc::clone(stop)),
                Step::Start(_) => None,
            })
            .collect();
        Box::pin(async move {
            let mut first_failure = None;
            for stop in stops {
                if let Err(err) = run_stop(&stop, &ctx).await {
                    first_failure.get_or_insert(err);
                }
            }
            first_failure.map_or(Ok(()), Err)
        })
    }
}

/// Runs one hook (`kind`: start or stop); a panic, making its future or
/// running it, is an `Internal` error.
async fn run_hook(hook: &Hook, ctx: &ServiceContext, kind: &str) -> Result<()> {
    let panicked = || {
        Err(Error::internal(format!(
            "a {kind} hook of {} panicked",
            ctx.descriptor()
        )))
    };
    match std::panic::catch_unwind(AssertUnwindSafe(|| hook(ctx.clone()))) {
        Ok(future) => AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| panicked()),
        Err(_) => panicked(),
    }
}

/// Runs one stop hook; a failure or a panic is logged and returned.
async fn run_stop(stop: &Hook, ctx: &ServiceContext) -> Result<()> {
    let outcome = run_hook(stop, ctx, "stop").await;
    if let Err(err) = &outcome {
        tracing::error!(service = %ctx.descriptor(), error = ?err, "a stop hook failed");
    }
    outcome
}

/// The stop hooks paired with the start hooks that succeeded so far, run in
/// reverse when the start fails, or on a task of their own when the start
/// is dropped before it ends.
struct Undo {
    ctx: ServiceContext,
    stops: Vec<Hook>,
}

impl Undo {
    async fn run(&mut self) {
        while let Some(stop) = self.stops.pop() {
            // Failures are logged; the start's own error is the answer.
            let _logged = run_stop(&stop, &self.ctx).await;
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.stops.is_empty() {
            return;
        }
        let mut undo = Self {
            ctx: self.ctx.clone(),
            stops: std::mem::take(&mut self.stops),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            tracing::warn!(service = %undo.ctx.descriptor(), "the start was abandoned; undoing the start hooks that ran");
            let undoing = undo.ctx.undoing().clone();
            undoing.spawn_on(async move { undo.run().await }, &runtime);
        } else {
            undo.stops.clear();
            tracing::error!(service = %undo.ctx.descriptor(), "the start was abandoned outside a runtime; its stop hooks cannot run");
        }
    }
}
