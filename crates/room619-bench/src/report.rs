//! Summaries of load runs and the comparison table.
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

use std::io::{self, Write};

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
    /// Failed or wrongly answered requests.
    pub errors: u64,
    /// CPU time of the server's threads per successful request, in
    /// microseconds (user and kernel), when it was read.
    pub server_cpu_us: Option<f64>,
}

impl From<&Measurement> for Summary {
    fn from(measurement: &Measurement) -> Self {
        Self {
            throughput: measurement.throughput(),
            p50_us: measurement.quantile_us(0.50),
            p99_us: measurement.quantile_us(0.99),
            errors: measurement.errors,
            server_cpu_us: None,
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
            errors: rounds.iter().map(|s| s.errors).sum(),
            server_cpu_us: median(rounds.iter().filter_map(|s| s.server_cpu_us)),
        })
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

    /// Throughput at equal CPU: `bare`'s CPU per request over this run's
    /// (`None` unless both were read).
    #[must_use]
    pub fn cpu_throughput_ratio(&self, bare: &Summary) -> Option<f64> {
        Some(ratio(bare.server_cpu_us?, self.server_cpu_us?))
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
            errors: 0,
            server_cpu_us: Some(cpu_us),
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
        let run = Summary {
            throughput: 1.0,
            p50_us: 1.0,
            p99_us: 1.0,
            errors: 0,
            server_cpu_us: None,
        };
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
