//! Recording a run: events appended to `history.jsonl` in the order they
//! happen (the checker's real-time order), each with its index and its
//! time since the run began. One lock orders the whole file.

use std::fs::File;
use std::io::LineWriter;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::exp::history::{Event, HistoryError, HistoryWriter};

struct Inner {
    out: HistoryWriter<LineWriter<File>>,
    next: u64,
    error: Option<String>,
}

/// A shared handle on the history being written.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

impl Recorder {
    /// Creates (truncating) `path`.
    pub fn create(path: &Path, start: Instant) -> Result<Recorder, HistoryError> {
        File::create(path).map_err(|error| HistoryError::Io {
            context: format!("cannot create {}", path.display()),
            error,
        })?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                out: HistoryWriter::append_to(path)?,
                next: 0,
                error: None,
            })),
            start,
        })
    }

    /// Nanoseconds since the run began.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Appends `e`, setting its index and time. A failed write is kept and
    /// reported by [`Recorder::finish`], so that the clients go on.
    pub fn record(&self, mut e: Event) {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        e.index = Some(g.next);
        e.time_ns = Some(self.now_ns());
        g.next += 1;
        if let Err(err) = g.out.append(&e)
            && g.error.is_none()
        {
            g.error = Some(err.to_string());
        }
    }

    /// Flushes, and reports the first failed write, if any.
    pub fn finish(&self) -> Result<(), String> {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(e) = g.error.take() {
            return Err(e);
        }
        g.out.flush().map_err(|e| e.to_string())
    }
}
