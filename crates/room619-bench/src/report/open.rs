//! The table of open-loop runs: latencies from each request's slot in the
//! schedule, late and unsent requests, and room619's tail over bare's at
//! the same offered load.

use std::io::{self, Write};

use super::{Comparison, Summary, ratio, write_paired, write_spans};

/// Writes the table of open-loop runs at `rate` requests per second
/// (Markdown) and, per scenario, the paired per-round ratios of p99 and
/// p99.9 with their medians.
///
/// # Errors
///
/// If `out` cannot be written.
pub fn write_open_table(
    out: &mut impl Write,
    rate: u32,
    comparisons: &[Comparison],
) -> io::Result<()> {
    writeln!(
        out,
        "| scenario | target | offered req/s | req/s | p50 µs | p99 µs | p99.9 µs | late | unsent | errors | send lag p50 / p99 µs | server CPU µs/req | load CPU µs/req | p99 room619/bare | p99.9 room619/bare |"
    )?;
    writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for comparison in comparisons {
        let (Some(bare), Some(room)) = (
            Summary::median_of(&comparison.bare),
            Summary::median_of(&comparison.room619),
        ) else {
            continue;
        };
        for (target, summary, ratios) in [
            (comparison.bare_name, &bare, None),
            (
                "room619",
                &room,
                Some((
                    ratio(room.p99_us, bare.p99_us),
                    ratio(room.p999_us, bare.p999_us),
                )),
            ),
        ] {
            let shown = |value: Option<f64>, digits: usize| {
                value
                    .map(|value| format!("{value:.digits$}"))
                    .unwrap_or_default()
            };
            writeln!(
                out,
                "| {} | {target} | {rate} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                comparison.scenario,
                summary.throughput,
                summary.p50_us,
                summary.p99_us,
                summary.p999_us,
                summary.late,
                summary.unsent,
                summary.errors,
                shown(summary.send_lag_p50_us, 1),
                shown(summary.send_lag_p99_us, 1),
                shown(summary.server_cpu_us, 2),
                shown(summary.load_cpu_us, 2),
                shown(ratios.map(|r| r.0), 3),
                shown(ratios.map(|r| r.1), 3),
            )?;
        }
    }
    writeln!(out)?;
    for comparison in comparisons {
        let name = format!(
            "{} room619/{} at {rate} req/s",
            comparison.scenario, comparison.bare_name
        );
        write_paired(out, &name, "p50", &comparison.paired_ratios(|s| s.p50_us))?;
        write_paired(out, &name, "p99", &comparison.paired_ratios(|s| s.p99_us))?;
        write_paired(
            out,
            &name,
            "p99.9",
            &comparison.paired_ratios(|s| s.p999_us),
        )?;
    }
    write_spans(out, comparisons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{SpanCount, tests::run};

    #[test]
    fn the_open_loop_table_shows_the_tail_ratios_and_the_spans() {
        let summary = |p99_us, p999_us, late, received| Summary {
            p99_us,
            p999_us,
            late,
            send_lag_p50_us: Some(1.0),
            send_lag_p99_us: Some(3.0),
            spans: Some(SpanCount {
                received,
                requests: 100,
                ratio: 1.0,
            }),
            ..run()
        };
        let comparison = Comparison {
            scenario: "grpc",
            bare_name: "tonic",
            bare: vec![summary(10.0, 20.0, 0, 0)],
            room619: vec![summary(12.0, 30.0, 2, 90)],
        };
        let mut out = Vec::new();
        write_open_table(&mut out, 5_000, &[comparison]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "| grpc | room619 | 5000 | 1 | 1.0 | 12.0 | 30.0 | 2 | 0 | 0 | 1.0 / 3.0 |  |  | 1.200 | 1.500 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("p99.9 per round: 1.500 -> paired median 1.500"),
            "{text}"
        );
        assert!(
            text.contains(
                "room619 over the measured rounds: 90 spans received of ~100 ± 0 expected (0.900)"
            ),
            "{text}"
        );
    }
}
