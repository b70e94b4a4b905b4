//! A storage background thread that does one thing at an interval until it
//! is stopped: the shape shared by the periodic flusher (`commit.rs`) and
//! the memtable reaper (`reaper.rs`).
//!
//! The thread runs its tick at once, then once per interval. It ends when
//! the tick says so, when [`Periodic::shutdown`] is called, or when the
//! handle is dropped (its stop channel then disconnects); it is joined only
//! by whoever takes its `JoinHandle`, since a store dropped without `close`
//! must not block on a tick in progress.

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Handle to a running periodic thread.
pub(crate) struct Periodic {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Periodic {
    /// Starts the thread `name`, running `tick` now and every `interval`
    /// after, until it returns `Break` or the thread is stopped.
    pub(crate) fn start(
        name: &str,
        interval: Duration,
        mut tick: impl FnMut() -> ControlFlow<()> + Send + 'static,
    ) -> std::io::Result<Periodic> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while tick().is_continue() {
                    match stopped.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        // A stop asked, or the handle gone.
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Periodic {
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Tells the thread to stop after its current tick; returns the thread
    /// to join (`None` once taken).
    pub(crate) fn shutdown(&self) -> Option<JoinHandle<()>> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
