//! Summaries of load runs and the comparison tables.
//!
//! Each target is measured in several rounds; its row shows the median of
//! each figure over the rounds, and the room619 row adds the ratios of its
//! medians to the bare target's: throughput (higher is better, target
//! ≥ 0.95) and p99 latency (lower is better, target ≤ 1.10 for gRPC).
//! When the server threads' CPU time was read, each row also shows it per
//! request, and the room619 row the throughput that CPU time allows
//! relative to bare (bare's CPU per request over room619's): the figure a
//! saturated server converges to, moved far less by a noisy machine than
//! the measured throughput.
//!
//! An open-loop run (a fixed offered rate) has a table of its own
//! ([`write_open_table`]): the latencies at p50, p99 and p99.9 from each
//! request's slot in the schedule, the late and unsent requests, and the
//! ratios of room619's percentiles to bare's at the same offered load.

mod open;

use std::io::{self, Write};

pub use self::open::write_open_table;
use crate::load::{Measurement, as_f64};

/// The figures kept from one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Successful requests per second.
    pub throughput: f64,
    /// Median latency, in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, in microseconds.
    pub p999_us: f64,
    /// Failed, wrongly answered or timed-out requests.
    pub errors: u64,
    /// Open loop: requests sent after their slot (their caller was busy).
    pub late: u64,
    /// Open loop: requests of the schedule never sent.
    pub unsent: u64,
    /// Open loop: the median of how long after its slot a request was
    /// sent (0 when before), in microseconds (`None` in a closed loop).
    pub send_lag_p50_us: Option<f64>,
    /// Open loop: the 99th percentile of the same.
    pub send_lag_p99_us: Option<f64>,
    /// CPU time of the server's threads per successful request, in
    /// microseconds (user and kernel), when it was read.
    pub server_cpu_us: Option<f64>,
    /// CPU time of the load generator's threads (and the open-loop pacer's)
    /// per successful request, in microseconds, when it was read: on a
    /// small machine it is CPU the servers do not get.
    pub load_cpu_us: Option<f64>,
    /// Of `load_cpu_us`, the open-loop pacer's thread.
    pub pacer_cpu_us: Option<f64>,
    /// The spans the OTLP receiver got from the run, when the target was
    /// traced.
    pub spans: Option<SpanCount>,
}

/// Spans received from a traced run, beside how many its requests should
/// have made (one each, sampled): a run whose node dropped spans (its
/// export queue full) shows fewer than expected, by more than sampling
/// alone would move the count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanCount {
    /// Spans the receiver got.
    pub received: u64,
    /// Requests answered in the run, each making one span when sampled.
    pub requests: u64,
    /// The sampling ratio of new traces (0 when no span is recorded).
    pub ratio: f64,
}

impl From<&Measurement> for Summary {
    fn from(measurement: &Measurement) -> Self {
        // No send lag without a request sent on time.
        let open = measurement.rate.is_some() && !measurement.send_lag.is_empty();
        Self {
            throughput: measurement.throughput(),
            p50_us: measurement.quantile_us(0.50),
            p99_us: measurement.quantile_us(0.99),
            p999_us: measurement.quantile_us(0.999),
            errors: measurement.errors,
            late: measurement.late,
            unsent: measurement.unsent,
            send_lag_p50_us: open
                .then(|| as_f64(measurement.send_lag.value_at_quantile(0.50)) / 1_000.0),
            send_lag_p99_us: open
                .then(|| as_f64(measurement.send_lag.value_at_quantile(0.99)) / 1_000.0),
            server_cpu_us: None,
            load_cpu_us: None,
            pacer_cpu_us: None,
            spans: None,
        }
    }
}

impl Summary {
    /// The median of each figure over `rounds` (errors are summed); `None`
    /// when there are no rounds.
    #[must_use]
    pub fn median_of(rounds: &[Summary]) -> Option<Summary> {
        Some(Summary {
            throughput: median(rounds.iter().map(|s| s.throughput))?,
            p50_us: median(rounds.iter().map(|s| s.p50_us))?,
            p99_us: median(rounds.iter().map(|s| s.p99_us))?,
            p999_us: median(rounds.iter().map(|s| s.p999_us))?,
            errors: rounds.iter().map(|s| s.errors).sum(),
            late: rounds.iter().map(|s| s.late).sum(),
            unsent: rounds.iter().map(|s| s.unsent).sum(),
            send_lag_p50_us: median(rounds.iter().filter_map(|s| s.send_lag_p50_us)),
            send_lag_p99_us: median(rounds.iter().filter_map(|s| s.send_lag_p99_us)),
            server_cpu_us: median(rounds.iter().filter_map(|s| s.server_cpu_us)),
            load_cpu_us: median(rounds.iter().filter_map(|s| s.load_cpu_us)),
            pacer_cpu_us: median(rounds.iter().filter_map(|s| s.pacer_cpu_us)),
            spans: SpanCount::sum(rounds.iter().filter_map(|s| s.spans)),
        })
    }

    /// The same run with the spans its target exported.
    #[must_use]
    pub fn with_spans(mut self, spans: SpanCount) -> Self {
        self.spans = Some(spans);
        self
    }

    /// The same run with the server's CPU time over it, `cpu_nanos`,
    /// spread over its successful requests (`requests`).
    #[must_use]
    pub fn with_server_cpu(mut self, cpu_nanos: u64, requests: u64) -> Self {
        if requests > 0 {
            self.server_cpu_us = Some(as_f64(cpu_nanos) / as_f64(requests) / 1_000.0);
        }
        self
    }

    /// The same run with the load generator's CPU time over it,
    /// `cpu_nanos` (of which the pacer's, `pacer_nanos`), spread over its
    /// successful requests (`requests`).
    #[must_use]
    pub fn with_load_cpu(
        mut self,
        cpu_nanos: u64,
        pacer_nanos: Option<u64>,
        requests: u64,
    ) -> Self {
        if requests > 0 {
            let per_request = |nanos| as_f64(nanos) / as_f64(requests) / 1_000.0;
            self.load_cpu_us = Some(per_request(cpu_nanos));
            self.pacer_cpu_us = pacer_nanos.map(per_request);
        }
        self
    }

    /// Throughput at equal CPU: `bare`'s CPU per request over this run's
    /// (`None` unless both were read).
    #[must_use]
    pub fn cpu_throughput_ratio(&self, bare: &Summary) -> Option<f64> {
        Some(ratio(bare.server_cpu_us?, self.server_cpu_us?))
    }
}

impl SpanCount {
    /// The spans expected: the ratio times the requests.
    #[must_use]
    pub fn expected(&self) -> f64 {
        self.ratio * as_f64(self.requests)
    }

    /// How far sampling alone moves the count from [`expected`](Self::expected):
    /// three standard deviations of a binomial draw (0 at ratios 0 and 1).
    #[must_use]
    pub fn spread(&self) -> f64 {
        3.0 * (self.expected() * (1.0 - self.ratio)).max(0.0).sqrt()
    }

    /// The spans received over the spans expected.
    #[must_use]
    pub fn share(&self) -> f64 {
        ratio(as_f64(self.received), self.expected())
    }

    /// The totals of `counts` (runs at one ratio); `None` when there are
    /// none.
    fn sum(counts: impl Iterator<Item = SpanCount>) -> Option<SpanCount> {
        counts.reduce(|a, b| SpanCount {
            received: a.received + b.received,
            requests: a.requests + b.requests,
            ratio: a.ratio,
        })
    }
}

impl std::fmt::Display for SpanCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} spans received of ~{:.0} ± {:.0} expected ({:.3})",
            self.received,
            self.expected(),
            self.spread(),
            self.share()
        )
    }
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty.
#[must_use]
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => values.get(middle).copied(),
        _ => Some(f64::midpoint(values[middle - 1], values[middle])),
    }
}

/// One scenario's result: the bare target and room619, each over all rounds.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// `grpc` or `rest`.
    pub scenario: &'static str,
    /// The bare target's name (`tonic` or `axum`).
    pub bare_name: &'static str,
    /// The bare target, round by round.
    pub bare: Vec<Summary>,
    /// The room619 node, round by round.
    pub room619: Vec<Summary>,
}

impl Comparison {
    /// The ratio room619 / bare of one figure, round by round. The two runs
    /// of a round are back to back, so each pair shares the machine's
    /// conditions of the moment; the median of these ratios is the figure
    /// least moved by a noisy machine.
    #[must_use]
    pub fn paired_ratios(&self, figure: impl Fn(&Summary) -> f64) -> Vec<f64> {
        self.bare
            .iter()
            .zip(&self.room619)
            .map(|(bare, room)| ratio(figure(room), figure(bare)))
            .collect()
    }
}

/// Writes the comparison table (Markdown) and, per scenario, the paired
/// per-round ratios of throughput and p99 with their medians.
///
/// # Errors
///
/// If `out` cannot be written.
pub fn write_table(out: &mut impl Write, comparisons: &[Comparison]) -> io::Result<()> {
    writeln!(
        out,
        "| scenario | target | req/s | p50 µs | p99 µs | errors | server CPU µs/req | req/s room619/bare | p99 room619/bare | req/s at equal CPU room619/bare |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for comparison in comparisons {
        let (Some(bare), Some(room)) = (
            Summary::median_of(&comparison.bare),
            Summary::median_of(&comparison.room619),
        ) else {
            continue;
        };
        write_row(out, comparison.scenario, comparison.bare_name, &bare, None)?;
        let ratios = Ratios {
            throughput: ratio(room.throughput, bare.throughput),
            p99: ratio(room.p99_us, bare.p99_us),
            cpu_throughput: room.cpu_throughput_ratio(&bare),
        };
        write_row(out, comparison.scenario, "room619", &room, Some(ratios))?;
    }
    writeln!(out)?;
    for comparison in comparisons {
        let name = format!("{} room619/{}", comparison.scenario, comparison.bare_name);
        write_paired(
            out,
            &name,
            "req/s",
            &comparison.paired_ratios(|s| s.throughput),
        )?;
        write_paired(out, &name, "p99", &comparison.paired_ratios(|s| s.p99_us))?;
        let cpu: Vec<f64> = comparison
            .bare
            .iter()
            .zip(&comparison.room619)
            .filter_map(|(bare, room)| room.cpu_throughput_ratio(bare))
            .collect();
        if !cpu.is_empty() {
            write_paired(out, &name, "req/s at equal CPU", &cpu)?;
        }
    }
    write_spans(out, comparisons)
}

/// One line per traced target: the spans received over its measured
/// rounds beside the number expected, and the round with the fewest.
fn write_spans(out: &mut impl Write, comparisons: &[Comparison]) -> io::Result<()> {
    for comparison in comparisons {
        for (target, rounds) in [
            (comparison.bare_name, &comparison.bare),
            ("room619", &comparison.room619),
        ] {
            let Some(total) = SpanCount::sum(rounds.iter().filter_map(|s| s.spans)) else {
                continue;
            };
            let fewest = rounds
                .iter()
                .filter_map(|s| s.spans)
                .min_by(|a, b| a.share().total_cmp(&b.share()))
                .map(|s| format!("; the round with the fewest: {s}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{} {target} over the measured rounds: {total}{fewest}",
                comparison.scenario
            )?;
        }
    }
    Ok(())
}

/// One line of paired per-round ratios and their median.
fn write_paired(out: &mut impl Write, name: &str, figure: &str, ratios: &[f64]) -> io::Result<()> {
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
    let median = median(ratios.iter().copied()).unwrap_or(f64::NAN);
    writeln!(
        out,
        "{name} {figure} per round: {} -> paired median {median:.3}",
        shown.join(" ")
    )
}

/// The room619 row's ratios to bare.
struct Ratios {
    throughput: f64,
    p99: f64,
    cpu_throughput: Option<f64>,
}

fn write_row(
    out: &mut impl Write,
    scenario: &str,
    target: &str,
    summary: &Summary,
    ratios: Option<Ratios>,
) -> io::Result<()> {
    let shown = |value: Option<f64>| value.map(|value| format!("{value:.3}")).unwrap_or_default();
    let cpu = summary
        .server_cpu_us
        .map(|us| format!("{us:.2}"))
        .unwrap_or_default();
    let (throughput, p99, cpu_throughput) = match ratios {
        Some(ratios) => (
            shown(Some(ratios.throughput)),
            shown(Some(ratios.p99)),
            shown(ratios.cpu_throughput),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    writeln!(
        out,
        "| {scenario} | {target} | {:.0} | {:.1} | {:.1} | {} | {cpu} | {throughput} | {p99} | {cpu_throughput} |",
        summary.throughput, summary.p50_us, summary.p99_us, summary.errors
    )
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed-loop run with every figure 1 and nothing else read.
    pub(super) fn run() -> Summary {
        Summary {
            throughput: 1.0,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            errors: 0,
            late: 0,
            unsent: 0,
            send_lag_p50_us: None,
            send_lag_p99_us: None,
            server_cpu_us: None,
            load_cpu_us: None,
            pacer_cpu_us: None,
            spans: None,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn the_room619_row_carries_the_ratios() {
        let summary = |throughput, p99_us, cpu_us| Summary {
            throughput,
            p50_us: 1.0,
            p99_us,
            server_cpu_us: Some(cpu_us),
            ..run()
        };
        let comparison = Comparison {
            scenario: "grpc",
            bare_name: "tonic",
            bare: vec![summary(100.0, 10.0, 20.0)],
            room619: vec![summary(90.0, 12.0, 25.0)],
        };
        let mut out = Vec::new();
        write_table(&mut out, &[comparison]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "| grpc | room619 | 90 | 1.0 | 12.0 | 0 | 25.00 | 0.900 | 1.200 | 0.800 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("req/s per round: 0.900 -> paired median 0.900"),
            "{text}"
        );
        assert!(text.contains("p99 per round: 1.200"), "{text}");
        assert!(
            text.contains("req/s at equal CPU per round: 0.800 -> paired median 0.800"),
            "{text}"
        );
    }

    #[test]
    fn cpu_per_request_is_spread_over_the_requests_and_absent_when_unread() {
        let run = run();
        assert_eq!(
            run.with_server_cpu(3_000_000, 1_000).server_cpu_us,
            Some(3.0)
        );
        assert_eq!(run.with_server_cpu(3_000_000, 0).server_cpu_us, None);
        assert_eq!(run.cpu_throughput_ratio(&run.with_server_cpu(1, 1)), None);
        let table = |runs: Vec<Summary>| {
            let mut out = Vec::new();
            let comparison = Comparison {
                scenario: "rest",
                bare_name: "axum",
                bare: runs.clone(),
                room619: runs,
            };
            write_table(&mut out, &[comparison]).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(!table(vec![run]).contains("equal CPU per round"));
    }
}
