//! Failed calls inside a criterion benchmark's timed closure.
//!
//! criterion times whatever the closure does: a call that fails fast would
//! be timed as a fast call, and a batch cut short by `?` counted as a whole
//! batch. A benchmark passes each outcome through [`Failures::check`]
//! instead, which counts failures per benchmark (and keeps the first
//! error); at the end [`Failures::verdict`] turns any failure into an error
//! for `main` to exit with.
//!
//! ```
//! use room619_bench::failures::Failures;
//!
//! let failures = Failures::default();
//! assert_eq!(failures.check("ok", Ok::<_, &str>(1)), Some(1));
//! assert_eq!(failures.check("broken", Err::<u8, _>("refused")), None);
//! let verdict = failures.verdict().unwrap_err();
//! assert!(verdict.contains("broken: 1 failed, the first: refused"), "{verdict}");
//! ```

use std::{
    collections::BTreeMap,
    fmt::Display,
    sync::{Mutex, PoisonError},
};

/// The failures of a benchmark run, per benchmark. Successes cost a
/// branch; only a failure takes the lock.
#[derive(Debug, Default)]
pub struct Failures {
    /// Per benchmark: how many failed, and the first error.
    by_bench: Mutex<BTreeMap<&'static str, (u64, String)>>,
}

impl Failures {
    /// The value of `result`, or `None` after counting its error against
    /// `bench`.
    pub fn check<T, E: Display>(&self, bench: &'static str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.fail(bench, &err);
                None
            }
        }
    }

    /// Counts a failure of `bench`, `what` went wrong.
    pub fn fail(&self, bench: &'static str, what: &dyn Display) {
        let mut by_bench = self.by_bench.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = by_bench
            .entry(bench)
            .or_insert_with(|| (0, what.to_string()));
        entry.0 += 1;
    }

    /// How many calls failed, in all benchmarks.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.by_bench
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(count, _)| count)
            .sum()
    }

    /// Every benchmark with failures, one a line, as the error of the run.
    ///
    /// # Errors
    ///
    /// When any call failed: the figures of its benchmark are not those of
    /// the calls it meant to time.
    pub fn verdict(&self) -> Result<(), String> {
        let by_bench = self.by_bench.lock().unwrap_or_else(PoisonError::into_inner);
        if by_bench.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = by_bench
            .iter()
            .map(|(bench, (count, first))| format!("{bench}: {count} failed, the first: {first}"))
            .collect();
        Err(format!(
            "calls failed inside timed benchmarks, whose figures are therefore wrong:\n{}",
            lines.join("\n")
        ))
    }
}

/// The verdict of a load run (`loadgen`, `obsload`, `soak`) that counted
/// `errors` (requests that failed, were answered wrongly or timed out;
/// `warm_up` says what else is included) against `--max-errors`.
///
/// # Errors
///
/// The message to exit with when `errors` is over `max_errors`.
///
/// ```
/// use room619_bench::failures::within;
///
/// assert!(within(0, 0, "warm-up included").is_ok());
/// let err = within(3, 1, "warm-up included").unwrap_err();
/// assert!(err.starts_with("3 requests failed"), "{err}");
/// ```
pub fn within(errors: u64, max_errors: u64, warm_up: &str) -> Result<(), String> {
    if errors > max_errors {
        return Err(format!(
            "{errors} requests failed, were answered wrongly or timed out \
             ({warm_up}; --max-errors {max_errors})"
        ));
    }
    Ok(())
}
