//! Summaries of load runs and the comparison table.
//!
//! Each target is measured in several rounds; its row shows the median of
//! each figure over the rounds, and the room619 row adds the ratios of its
//! medians to the bare target's: throughput (higher is better, target
//! ≥ 0.95) and p99 latency (lower is better, target ≤ 1.10 for gRPC).

use std::io::{self, Write};

use crate::load::Measurement;

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
}

impl From<&Measurement> for Summary {
    fn from(measurement: &Measurement) -> Self {
        Self {
            throughput: measurement.throughput(),
            p50_us: measurement.quantile_us(0.50),
            p99_us: measurement.quantile_us(0.99),
            errors: measurement.errors,
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
        })
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
        "| scenario | target | req/s | p50 µs | p99 µs | errors | req/s room619/bare | p99 room619/bare |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for comparison in comparisons {
        let (Some(bare), Some(room)) = (
            Summary::median_of(&comparison.bare),
            Summary::median_of(&comparison.room619),
        ) else {
            continue;
        };
        write_row(out, comparison.scenario, comparison.bare_name, &bare, None)?;
        let ratios = (
            ratio(room.throughput, bare.throughput),
            ratio(room.p99_us, bare.p99_us),
        );
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

fn write_row(
    out: &mut impl Write,
    scenario: &str,
    target: &str,
    summary: &Summary,
    ratios: Option<(f64, f64)>,
) -> io::Result<()> {
    let (throughput_ratio, p99_ratio) = match ratios {
        Some((throughput, p99)) => (format!("{throughput:.3}"), format!("{p99:.3}")),
        None => (String::new(), String::new()),
    };
    writeln!(
        out,
        "| {scenario} | {target} | {:.0} | {:.1} | {:.1} | {} | {throughput_ratio} | {p99_ratio} |",
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
        let summary = |throughput, p99_us| Summary {
            throughput,
            p50_us: 1.0,
            p99_us,
            errors: 0,
        };
        let comparison = Comparison {
            scenario: "grpc",
            bare_name: "tonic",
            bare: vec![summary(100.0, 10.0)],
            room619: vec![summary(90.0, 12.0)],
        };
        let mut out = Vec::new();
        write_table(&mut out, &[comparison]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("| grpc | room619 | 90 | 1.0 | 12.0 | 0 | 0.900 | 1.200 |"),
            "{text}"
        );
        assert!(
            text.contains("req/s per round: 0.900 -> paired median 0.900"),
            "{text}"
        );
        assert!(text.contains("p99 per round: 1.200"), "{text}");
    }
}
