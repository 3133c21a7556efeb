//! The sampling decision for a span the layer starts, made without the SDK
//! when the span is not sampled, which is most spans at a low ratio.
//!
//! The SDK's tracer, asked to build an unsampled span, still clones its
//! sampler's inputs, runs the parent-based sampler through two trait
//! objects and makes a span object to throw away: some 400 instructions on
//! every request at sampling 0.1. A [`Telemetry`](super::Telemetry)
//! provider samples parent-based with a ratio for new traces, a rule that
//! depends on the parent's flag and the trace id only; the layer applies
//! the same rule first ([`Ratio::decide`]) and builds only a sampled span
//! with the SDK. So that the SDK, deciding again, sees the trace id the
//! layer decided on, the provider takes its ids from [`Ids`], which hands
//! over a trace id chosen in advance ([`with_trace_id`]).

use std::cell::Cell;

use opentelemetry::{
    Context, KeyValue,
    trace::{
        Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    },
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SamplingResult, ShouldSample,
};

/// Parent-based sampling with a ratio for new traces, as
/// `Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))`
/// decides it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ratio {
    /// A new trace is sampled when the low 63 bits of its id, read as the
    /// SDK reads them, are below this (`u64::MAX`: every one).
    bound: u64,
}

/// What [`Ratio::decide`] says of a span about to start.
pub(crate) enum Decision {
    /// Not sampled: the span's context, ready (no SDK span is needed).
    Unsampled(SpanContext),
    /// Sampled: build it with the SDK, which decides the same; for a new
    /// trace, with this trace id.
    Sampled(Option<TraceId>),
}

impl Ratio {
    /// `ratio` of new traces (clamped to 0–1, as the SDK does).
    pub(crate) fn new(ratio: f64) -> Self {
        let bound = if ratio >= 1.0 {
            u64::MAX
        } else {
            // The SDK's own arithmetic (`sample_based_on_probability`), so
            // that the same ratio gives the same bound. A NaN ratio is 0.
            truncate(ratio.max(0.0) * 2_f64.powi(63))
        };
        Self { bound }
    }

    /// Whether a new trace with this id is sampled.
    fn samples(self, trace_id: TraceId) -> bool {
        if self.bound == u64::MAX {
            return true;
        }
        let bytes = trace_id.to_bytes();
        let mut low = [0; 8];
        low.copy_from_slice(&bytes[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }

    /// The decision for a span whose parent context is `parent`: the
    /// parent's flag when it has a valid span, the ratio on a new trace id
    /// otherwise.
    pub(crate) fn decide(self, parent: &Context) -> Decision {
        let parent = parent.span();
        let parent = parent.span_context();
        let (trace_id, trace_state) = if parent.is_valid() {
            if parent.is_sampled() {
                return Decision::Sampled(None);
            }
            (parent.trace_id(), parent.trace_state().clone())
        } else {
            let trace_id = RandomIdGenerator::default().new_trace_id();
            if self.samples(trace_id) {
                return Decision::Sampled(Some(trace_id));
            }
            (trace_id, TraceState::default())
        };
        let span_id = RandomIdGenerator::default().new_span_id();
        Decision::Unsampled(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::default(),
            false,
            trace_state,
        ))
    }
}

/// `value as u64` (the fraction dropped) for a `value` in `0.0..2⁶⁴`,
/// without a cast: from the float's exponent and mantissa.
fn truncate(value: f64) -> u64 {
    const MANTISSA_BITS: u64 = 52;
    const BIAS: u64 = 1023;
    let bits = value.to_bits();
    let exponent = (bits >> MANTISSA_BITS) & 0x7ff;
    if exponent < BIAS {
        // Below 1 (zero and subnormals included).
        return 0;
    }
    let mantissa = (bits & ((1 << MANTISSA_BITS) - 1)) | (1 << MANTISSA_BITS);
    // `value` is `mantissa * 2^(exponent - BIAS - MANTISSA_BITS)`.
    let scale = exponent - BIAS;
    if scale >= MANTISSA_BITS {
        mantissa << (scale - MANTISSA_BITS)
    } else {
        mantissa >> (MANTISSA_BITS - scale)
    }
}

/// The provider's sampler: the same rule, for the spans the SDK builds
/// (the layer's sampled spans, and spans made with the OpenTelemetry API
/// directly), cheaper than the SDK's `ParentBased` and `TraceIdRatioBased`
/// through two trait objects. One difference: a parent context whose span
/// is invalid is no parent here (the ratio decides), where the SDK's
/// sampler would drop the span for its unset flag.
impl ShouldSample for Ratio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context.map(TraceContextExt::span);
        let parent = parent
            .as_ref()
            .map(opentelemetry::trace::SpanRef::span_context)
            .filter(|parent| parent.is_valid());
        let sampled = parent.map_or_else(|| self.samples(trace_id), SpanContext::is_sampled);
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|parent| parent.trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

thread_local! {
    /// The trace id [`Ids`] gives next on this thread, if one was chosen.
    static NEXT_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Runs `build` with `trace_id` (if any) as the id [`Ids`] gives the next
/// new trace on this thread; none is left behind, even when `build` made
/// no new trace.
pub(crate) fn with_trace_id<T>(trace_id: Option<TraceId>, build: impl FnOnce() -> T) -> T {
    let Some(trace_id) = trace_id else {
        return build();
    };
    NEXT_TRACE_ID.set(Some(trace_id));
    let _clear = ClearTraceId;
    build()
}

/// Empties [`NEXT_TRACE_ID`] when dropped: after a build, even one that
/// panics.
struct ClearTraceId;

impl Drop for ClearTraceId {
    fn drop(&mut self) {
        NEXT_TRACE_ID.set(None);
    }
}

/// The provider's ids: random, as the SDK's, except a trace id handed over
/// with [`with_trace_id`].
#[derive(Debug, Default)]
pub(crate) struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        NEXT_TRACE_ID
            .take()
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::trace::Sampler;

    use super::*;

    /// The SDK's decision for a span of `parent` in trace `trace_id`,
    /// checked to be the decision of [`Ratio`] as the provider's sampler
    /// (the trace state too).
    fn sdk_samples(ratio: f64, parent: &Context, trace_id: TraceId) -> bool {
        let sdk = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
        let ours = Ratio::new(ratio);
        let attributes: &[KeyValue] = &[];
        let [sdk, ours] = [&sdk as &dyn ShouldSample, &ours].map(|sampler| {
            sampler.should_sample(
                Some(parent),
                trace_id,
                "span",
                &SpanKind::Server,
                attributes,
                &[],
            )
        });
        assert_eq!(ours.decision, sdk.decision, "{trace_id}");
        assert_eq!(ours.trace_state, sdk.trace_state);
        assert!(ours.attributes.is_empty());
        sdk.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn truncation_is_the_cast() {
        // What `value as u64` gives (worked out apart, in Python's `int`).
        for (value, cast) in [
            (0.0, 0),
            (0.4, 0),
            (1.0, 1),
            (1.5, 1),
            (2.0, 2),
            (3.999, 3),
            (4_503_599_627_370_495.5, 4_503_599_627_370_495),
            (4_503_599_627_370_496.0, 4_503_599_627_370_496),
            (9_007_199_254_740_993.0, 9_007_199_254_740_992),
            (0.1 * 2_f64.powi(63), 922_337_203_685_477_632),
            (0.999_999_999 * 2_f64.powi(63), 9_223_372_027_631_404_032),
            (2_f64.powi(63), 1 << 63),
            (2_f64.powi(64) - 4096.0, u64::MAX - 4095),
            (f64::MIN_POSITIVE, 0),
        ] {
            assert_eq!(truncate(value), cast, "{value}");
        }
    }

    #[test]
    fn new_traces_are_decided_as_the_sdk_decides_them() {
        for (ratio, expected) in [
            (0.0, 0..1),
            (0.001, 0..20),
            (0.1, 120..280),
            (0.5, 800..1200),
            (0.999, 1980..2001),
            (1.0, 2000..2001),
            (2.0, 2000..2001),
            (-1.0, 0..1),
            (f64::NAN, 0..1),
        ] {
            let ours = Ratio::new(ratio);
            let mut sampled = 0;
            for _ in 0..2_000 {
                let trace_id = RandomIdGenerator::default().new_trace_id();
                let sdk = sdk_samples(ratio, &Context::new(), trace_id);
                assert_eq!(ours.samples(trace_id), sdk, "ratio {ratio}, {trace_id}");
                sampled += usize::from(sdk);
            }
            assert!(
                expected.contains(&sampled),
                "ratio {ratio}: {sampled} of 2000"
            );
        }
        // At the bound itself (the low 64 bits halved: 2⁶² at ratio 0.5),
        // and just below: the SDK's comparison is strict.
        let ours = Ratio::new(0.5);
        let at = TraceId::from(u128::from(1_u64 << 63));
        let below = TraceId::from(u128::from((1_u64 << 63) - 2));
        assert_eq!(ours.samples(at), sdk_samples(0.5, &Context::new(), at));
        assert_eq!(
            ours.samples(below),
            sdk_samples(0.5, &Context::new(), below)
        );
        assert!(!ours.samples(at) && ours.samples(below));
    }

    #[test]
    fn a_parent_decides_for_its_children() {
        let ratio = Ratio::new(1.0);
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        for (sampled, remote) in [(true, true), (true, false), (false, true), (false, false)] {
            let flags = if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let parent = SpanContext::new(
                TraceId::from(7),
                SpanId::from(9),
                flags,
                remote,
                state.clone(),
            );
            let cx = Context::new().with_remote_span_context(parent);
            assert_eq!(sdk_samples(1.0, &cx, TraceId::from(7)), sampled);
            match ratio.decide(&cx) {
                Decision::Sampled(trace_id) => {
                    assert!(sampled);
                    assert_eq!(trace_id, None, "the parent's trace goes on");
                }
                Decision::Unsampled(span) => {
                    assert!(
                        !sampled,
                        "a sampled parent's child is sampled, at any ratio"
                    );
                    assert_eq!(span.trace_id(), TraceId::from(7));
                    assert_ne!(span.span_id(), SpanId::from(9));
                    assert_ne!(span.span_id(), SpanId::INVALID);
                    assert!(!span.is_sampled() && !span.is_remote());
                    assert_eq!(span.trace_state(), &state, "the trace state goes on");
                }
            }
        }
        // Not sampled at ratio 0 either way, though the parent was sampled.
        let parent = SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(parent);
        assert!(matches!(
            Ratio::new(0.0).decide(&cx),
            Decision::Sampled(None)
        ));
    }

    #[test]
    fn a_parent_with_an_invalid_span_is_no_parent() {
        let cx = Context::new().with_remote_span_context(SpanContext::empty_context());
        let trace_id = RandomIdGenerator::default().new_trace_id();
        for ratio in [0.0, 1.0] {
            let provider = Ratio::new(ratio).should_sample(
                Some(&cx),
                trace_id,
                "span",
                &SpanKind::Internal,
                &[],
                &[],
            );
            let sampled = provider.decision == SamplingDecision::RecordAndSample;
            assert_eq!(
                sampled,
                ratio > 0.5,
                "the ratio decides, as for a new trace"
            );
            let layer = matches!(Ratio::new(ratio).decide(&cx), Decision::Sampled(Some(_)));
            assert_eq!(layer, sampled, "the layer decides as the provider does");
        }
    }

    #[test]
    fn a_new_trace_keeps_the_id_it_was_decided_on() {
        match Ratio::new(1.0).decide(&Context::new()) {
            Decision::Sampled(Some(trace_id)) => {
                let ids = Ids::default();
                let handed = with_trace_id(Some(trace_id), || ids.new_trace_id());
                assert_eq!(handed, trace_id);
                // Taken once: the next trace is a new one.
                assert_ne!(ids.new_trace_id(), trace_id);
            }
            _ => panic!("ratio 1 samples every new trace"),
        }
        match Ratio::new(0.0).decide(&Context::new()) {
            Decision::Unsampled(span) => {
                assert!(span.is_valid() && !span.is_sampled());
                assert_eq!(span.trace_state(), &TraceState::default());
            }
            Decision::Sampled(_) => panic!("ratio 0 samples no new trace"),
        }
        // A build that makes no new trace leaves no id behind, nor one
        // that panics.
        let ids = Ids::default();
        with_trace_id(Some(TraceId::from(5)), || ());
        assert_ne!(ids.new_trace_id(), TraceId::from(5));
        let panicked = std::panic::catch_unwind(|| {
            with_trace_id(Some(TraceId::from(6)), || panic!("in the build"));
        });
        assert!(panicked.is_err());
        assert_ne!(ids.new_trace_id(), TraceId::from(6));
    }
}
