//! [`Lines`]: a writer the log layers of unit tests write their lines into.

use std::sync::{Arc, Mutex};

/// Every byte written, shared by its clones (a `MakeWriter` hands out one
/// clone per line).
#[derive(Clone, Default)]
pub(super) struct Lines(Arc<Mutex<Vec<u8>>>);

impl Lines {
    /// What was written so far, as text.
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// A `MakeWriter` for a log layer, writing here.
    pub(super) fn make_writer(&self) -> impl Fn() -> Self + use<> {
        let lines = self.clone();
        move || lines.clone()
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
