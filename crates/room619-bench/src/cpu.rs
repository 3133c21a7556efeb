//! CPU time of a named group of threads, read from Linux's
//! `/proc/self/task/*/schedstat` (nanoseconds on a CPU, user and kernel
//! together).
//!
//! Throughput on a shared machine moves with whatever else runs; the CPU
//! time the server threads spent per request moves much less, and on a
//! saturated server it is what throughput is the inverse of. The load
//! harness reports both.
//!
//! ```
//! use room619_bench::cpu::ThreadCpu;
//!
//! let main = ThreadCpu::named("does-not-exist");
//! assert_eq!(main.nanos().unwrap_or(0), 0);
//! ```

use std::{fs, io, path::Path};

/// The threads of this process whose name starts with one of a few
/// prefixes (tokio names a runtime's threads after its `thread_name`).
#[derive(Debug, Clone)]
pub struct ThreadCpu {
    prefixes: Vec<String>,
}

impl ThreadCpu {
    /// The threads named `prefix...` (Linux keeps 15 bytes of a name).
    #[must_use]
    pub fn named(prefix: &str) -> Self {
        Self {
            prefixes: vec![comm(prefix)],
        }
    }

    /// These threads and those named `prefix...` too.
    #[must_use]
    pub fn and_named(mut self, prefix: &str) -> Self {
        self.prefixes.push(comm(prefix));
        self
    }

    /// Nanoseconds these threads have spent on a CPU, those alive now: a
    /// runtime's threads live as long as it does, so two readings around a
    /// run give the run's CPU time.
    ///
    /// # Errors
    ///
    /// When `/proc/self/task` cannot be read (not Linux, or no procfs), or
    /// a matching thread's `schedstat` says nothing readable.
    pub fn nanos(&self) -> io::Result<u64> {
        let mut total = 0;
        for task in fs::read_dir("/proc/self/task")? {
            let task = task?.path();
            // A thread that ended since the listing has no files: skipped.
            let Ok(name) = fs::read_to_string(task.join("comm")) else {
                continue;
            };
            let name = name.trim_end();
            if self.prefixes.iter().any(|prefix| name.starts_with(prefix)) {
                match on_cpu(&task) {
                    Some(nanos) => total += nanos,
                    // Gone since its name was read.
                    None if !task.exists() => {}
                    None => {
                        return Err(io::Error::other(format!(
                            "{} has no readable CPU time",
                            task.join("schedstat").display()
                        )));
                    }
                }
            }
        }
        Ok(total)
    }

    /// [`nanos`](Self::nanos), or `None` where it cannot be read: the
    /// harness then reports no CPU figures rather than failing.
    #[must_use]
    pub fn try_nanos(&self) -> Option<u64> {
        self.nanos().ok()
    }
}

/// Nanoseconds the calling thread has spent on a CPU, or `None` where it
/// cannot be read: for a thread that ends before its CPU time is read
/// from outside.
#[must_use]
pub fn this_thread_nanos() -> Option<u64> {
    on_cpu(Path::new("/proc/thread-self"))
}

/// A thread name as Linux keeps it: its first 15 bytes.
fn comm(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// The first field of a task's `schedstat`: its time on a CPU, in ns.
fn on_cpu(task: &Path) -> Option<u64> {
    fs::read_to_string(task.join("schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_named_thread_is_counted_and_others_are_not() {
        use std::{
            sync::{
                Arc,
                atomic::{AtomicBool, Ordering},
            },
            time::{Duration, Instant},
        };

        let stop = Arc::new(AtomicBool::new(false));
        let busy = std::thread::Builder::new()
            .name("cpu-test-busy".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                    x
                }
            })
            .unwrap();
        // The busy thread's CPU time must grow past 20 ms, however slowly
        // a loaded machine lets it run (up to a minute).
        let cpu = ThreadCpu::named("cpu-test-busy");
        let started = Instant::now();
        let mut seen = 0;
        while seen < 20_000_000 && started.elapsed() < Duration::from_secs(60) {
            seen = cpu.nanos().unwrap();
        }
        // Either of two prefixes counts.
        let either = ThreadCpu::named("cpu-test-none")
            .and_named("cpu-test-busy")
            .nanos()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
        assert!(seen >= 20_000_000, "{seen} ns");
        assert!(either >= seen, "{either} ns < {seen} ns");
        assert_eq!(ThreadCpu::named("cpu-test-none").nanos().unwrap(), 0);
        // 14 bytes and a two-byte letter: cut before the letter.
        assert_eq!(
            ThreadCpu::named(&format!("{}é", "a".repeat(14))).prefixes[0].len(),
            14
        );
    }
}
