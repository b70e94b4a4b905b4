//! One exchange, the responder's and the initiator's halves: comparing
//! digests, packing deltas under the size caps, and applying what arrives.

use std::{collections::HashSet, time::Duration};

use rand::{Rng, seq::SliceRandom};

use super::{LOCAL, Liveness, Member, Node, Want};
use crate::{
    Event, Message, Outgoing,
    failure_detector::ArrivalWindow,
    protocol::{Delta, Digest, str_len},
    state::{Addr, EndpointState, Entry, Generation, Version},
};

impl<R: Rng> Node<R> {
    /// SYN → ACK: push what the initiator lacks, request what we lack.
    pub(super) fn on_syn(&mut self, from: &Addr, digests: &[Digest]) -> Vec<Outgoing> {
        let mut seen = vec![false; self.members.len()];
        let mut unknown_seen: HashSet<&str> = HashSet::new();
        let mut wanted = Vec::new();
        let mut requests: Vec<(u64, Digest)> = Vec::new();
        for d in digests {
            let Some(&i) = self.index.get(&d.node) else {
                if !self.is_quarantined(&d.node, d.generation)
                    && unknown_seen.insert(d.node.as_str())
                {
                    let unknown = Digest {
                        node: d.node.clone(),
                        generation: 0,
                        version: 0,
                    };
                    requests.push((d.version.saturating_add(1), unknown));
                }
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                continue; // duplicate digest
            }
            let m = &self.members[i];
            let (g, v) = (m.state.generation(), m.state.max_version());
            let mine = || Digest {
                node: d.node.clone(),
                generation: g,
                version: v,
            };
            if (d.generation, d.version) < (g, v) {
                wanted.push(want(i, d.generation, d.version, g, v));
            } else if i == LOCAL {
                if d.generation > g {
                    tracing::warn!(
                        generation = g,
                        seen = d.generation,
                        "a former incarnation of this node has a higher generation; peers will ignore us"
                    );
                }
            } else if d.generation > g {
                requests.push((d.version, mine()));
            } else if d.version > v {
                requests.push((d.version - v, mine()));
            }
        }
        for (i, m) in self.members.iter().enumerate() {
            if !seen[i] {
                wanted.push(want(i, 0, 0, m.state.generation(), m.state.max_version()));
            }
        }
        requests.sort_by_key(|r| std::cmp::Reverse(r.0));
        // Requests take at most half the room; deltas fill the rest.
        let budget = self.budget();
        let mut used = 0;
        let mut reqs = Vec::new();
        for (_, d) in requests {
            let s = d.wire_size();
            if used + s > budget / 2 || reqs.len() >= self.config.max_states_per_message {
                break;
            }
            used += s;
            reqs.push(d);
        }
        let states = self.pack(wanted, budget - used);
        if states.is_empty() && reqs.is_empty() {
            return Vec::new();
        }
        vec![Outgoing {
            to: from.clone(),
            msg: Message::Ack {
                cluster: self.config.cluster_name.clone(),
                states,
                requests: reqs,
            },
        }]
    }

    /// ACK's requests → ACK2.
    pub(super) fn on_requests(&mut self, from: &Addr, requests: &[Digest]) -> Vec<Outgoing> {
        let mut seen = vec![false; self.members.len()];
        let mut wanted = Vec::new();
        for r in requests {
            let Some(&i) = self.index.get(&r.node) else {
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let m = &self.members[i];
            let (g, v) = (m.state.generation(), m.state.max_version());
            if (r.generation, r.version) < (g, v) {
                wanted.push(want(i, r.generation, r.version, g, v));
            }
        }
        let states = self.pack(wanted, self.budget());
        if states.is_empty() {
            return Vec::new();
        }
        vec![Outgoing {
            to: from.clone(),
            msg: Message::Ack2 {
                cluster: self.config.cluster_name.clone(),
                states,
            },
        }]
    }

    /// Bytes available for a message's deltas and requests: the cap minus
    /// the envelope (variant tag, cluster name, widest array headers).
    fn budget(&self) -> usize {
        self.config.max_message_bytes - (24 + str_len(self.config.cluster_name.len()))
    }

    /// Packs deltas, most out-of-date first, within `budget` bytes and the
    /// per-message count. Ties are shuffled so that, under a tight cap, no
    /// node is always last.
    fn pack(&mut self, mut wanted: Vec<Want>, budget: usize) -> Vec<Delta> {
        wanted.shuffle(&mut self.rng);
        wanted.sort_by_key(|w| std::cmp::Reverse(w.staleness));
        let mut out = Vec::new();
        let mut used = 0;
        for w in wanted {
            if out.len() >= self.config.max_states_per_message || budget - used < 32 {
                break;
            }
            let m = &self.members[w.member];
            let generation = m.state.generation();
            let mut size = Delta::header_size(&m.id, generation) + 9;
            let mut delta = Delta {
                node: m.id.clone(),
                generation,
                heartbeat: None,
                states: Vec::new(),
            };
            for e in m.state.entries_since(w.since) {
                let s = match e {
                    Entry::Heartbeat(_) => 0, // counted in the header
                    Entry::State(v) => v.wire_size(),
                };
                if used + size + s > budget {
                    break;
                }
                size += s;
                match e {
                    Entry::Heartbeat(v) => delta.heartbeat = Some(v),
                    Entry::State(v) => delta.states.push(v.clone()),
                }
            }
            if delta.heartbeat.is_some() || !delta.states.is_empty() {
                used += size;
                out.push(delta);
            }
        }
        out
    }

    pub(super) fn apply_all(&mut self, states: Vec<Delta>, now: Duration) {
        for d in states {
            self.apply(d, now);
        }
    }

    pub(super) fn apply(&mut self, d: Delta, now: Duration) {
        let fd = &self.config.failure_detector;
        let Some(&i) = self.index.get(&d.node) else {
            if self.is_quarantined(&d.node, d.generation) {
                return;
            }
            self.quarantine.remove(&d.node);
            let mut state = EndpointState::new(d.generation);
            state.apply(&d);
            tracing::info!(node = %d.node, generation = d.generation, "discovered");
            self.events.push(Event::Joined {
                node: d.node.clone(),
                generation: d.generation,
            });
            // Not an arrival: the state may be stale news of a dead node.
            // The first advance seen from here on starts the window.
            let mut m = Member::new(d.node.clone(), state, Liveness::Unknown);
            m.refresh(now);
            self.index.insert(d.node, self.members.len());
            self.members.push(m);
            return;
        };
        if i == LOCAL {
            if d.generation > self.local().generation() {
                tracing::warn!(
                    seen = d.generation,
                    "peers hold a higher generation of this node"
                );
            }
            return;
        }
        let m = &mut self.members[i];
        let merged = m.state.apply(&d);
        if merged.restarted {
            m.window = ArrivalWindow::default();
            m.window.record(now, fd);
            tracing::info!(node = %d.node, generation = d.generation, "restarted");
            self.events.push(Event::Restarted {
                node: d.node.clone(),
                generation: d.generation,
            });
        } else if merged.heartbeat_advanced {
            m.window.record(now, fd);
        }
        if merged.heartbeat_advanced && m.liveness != Liveness::Up {
            m.liveness = Liveness::Up;
            tracing::info!(node = %d.node, "up");
            self.events.push(Event::Up {
                node: d.node.clone(),
            });
        }
        if !merged.changed.is_empty() {
            m.refresh(now);
            self.events.push(Event::Updated {
                node: d.node,
                keys: merged.changed,
            });
        }
    }
}

fn want(
    member: usize,
    their_gen: Generation,
    their_ver: Version,
    g: Generation,
    v: Version,
) -> Want {
    let since = if their_gen == g { their_ver } else { 0 };
    Want {
        member,
        since,
        staleness: v - since,
    }
}
