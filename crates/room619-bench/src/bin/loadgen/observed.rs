//! What `--traced` adds: an OTLP receiver on a runtime of its own, the
//! provider exporting to it and the subscriber of the room619 node, and
//! the count of spans each run of the node exported.

use room619::observability::tracing::Telemetry;
use room619_bench::{
    BoxError,
    load::Measurement,
    otlp::{self, Receiver},
    report::SpanCount,
};
use tokio::runtime::Runtime;

pub(crate) struct Observed {
    pub(crate) ratio: f64,
    receiver: Receiver,
    telemetry: Telemetry,
    pub(crate) dispatch: tracing::Dispatch,
    /// Serves the receiver (and the exporter's connection) until dropped.
    _collector: Runtime,
}

impl Observed {
    pub(crate) fn start(ratio: f64) -> Result<Self, BoxError> {
        let collector = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-collector")
            .enable_all()
            .build()?;
        let receiver = Receiver::default();
        let endpoint = collector.block_on(receiver.clone().serve())?;
        let telemetry = collector.block_on(async { otlp::telemetry(&endpoint, ratio) })?;
        let layers = otlp::Layers {
            logs: true,
            otel: true,
        };
        let dispatch = otlp::subscriber(layers, &telemetry).ok_or("no subscriber")?;
        Ok(Self {
            ratio,
            receiver,
            telemetry,
            dispatch,
            _collector: collector,
        })
    }

    /// Exports every span ended so far (blocking until the receiver has
    /// answered), then returns how many spans the receiver has got in all.
    /// Call it outside the runtimes.
    pub(crate) fn flushed_spans(&self) -> Result<u64, BoxError> {
        self.telemetry.flush()?;
        Ok(self.receiver.spans())
    }

    /// The spans of a run measured as `measurement`, the receiver having
    /// counted `before` spans when it started: one span a request answered,
    /// sampled at the ratio. Spans the node dropped (its export queue full)
    /// make `received` fall short of the count expected.
    pub(crate) fn count(
        &self,
        before: u64,
        measurement: &Measurement,
    ) -> Result<SpanCount, BoxError> {
        let received = self.flushed_spans()?.saturating_sub(before);
        Ok(SpanCount {
            received,
            requests: measurement.answered(),
            ratio: self.ratio,
        })
    }
}
