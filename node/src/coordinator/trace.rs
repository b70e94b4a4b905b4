//! `?trace=true`: a coordinator's timeline of one request — which replicas
//! it asked, when each answered, digests or versions that disagreed,
//! repairs and hints written. Off by default and free when off: callers
//! hold an `Option<Trace>` and format an event only when it is `Some`.

use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use crate::proto::TraceEvent;

/// A request's timeline, shared by the tasks working on it.
#[derive(Clone)]
pub struct Trace {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    start: Instant,
    events: Mutex<Vec<TraceEvent>>,
}

impl Trace {
    /// Starts a timeline recorded by `node`.
    pub fn new(node: &str) -> Trace {
        Trace {
            inner: Arc::new(Inner {
                node: node.to_string(),
                start: Instant::now(),
                events: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Microseconds since the request started here.
    pub fn now_us(&self) -> u64 {
        self.inner.start.elapsed().as_micros() as u64
    }

    /// Records an event now.
    pub fn event(&self, event: impl Into<String>) {
        let e = TraceEvent {
            at_us: self.now_us(),
            node: self.inner.node.clone(),
            event: event.into(),
        };
        self.lock().push(e);
    }

    /// Adds another node's events, shifting their clock (relative to when
    /// that node started on the request) by `offset_us` of ours: the
    /// moment we sent it the request.
    pub fn absorb(&self, events: Vec<TraceEvent>, offset_us: u64) {
        let mut mine = self.lock();
        for mut e in events {
            e.at_us += offset_us;
            mine.push(e);
        }
    }

    /// The events so far, in time order.
    pub fn events(&self) -> Vec<TraceEvent> {
        let mut v = self.lock().clone();
        v.sort_by_key(|e| e.at_us);
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TraceEvent>> {
        self.inner.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Records `f()` on `trace` when tracing; costs nothing otherwise.
pub fn note(trace: &Option<Trace>, f: impl FnOnce() -> String) {
    if let Some(t) = trace {
        t.event(f());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbed_events_are_shifted_and_sorted() {
        let t = Trace::new("n1");
        t.event("asked n2");
        t.absorb(
            vec![TraceEvent {
                at_us: 5,
                node: "n2".into(),
                event: "stored".into(),
            }],
            1_000_000,
        );
        t.event("answered");
        let ev = t.events();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[2].node, "n2");
        assert!(ev[2].at_us >= 1_000_005);
        assert!(ev[0].at_us <= ev[1].at_us);
    }
}
