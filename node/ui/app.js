// quorumkv console: polls the node's API and draws what it answers.
// Plain DOM, no framework; docs/OPERATIONS.md, "Console", says what each view shows.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const NS = 'http://www.w3.org/2000/svg';
  const POLL_MS = 1500;
  const FIGURES_EVERY = 3; // polls between two rounds of members' own figures
  const TOKEN_KEY = 'qkv.token';
  const state = { view: 'ring', ring: null, members: [], figures: {}, tick: 0, ringSig: '', ctx: null, reportsAt: 0, blobs: {} };

  // ---- the API, with the token of this tab -----------------------------
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
  async function call(path, opts = {}) {
    const headers = Object.assign({}, opts.headers || {});
    if (token()) headers['Authorization'] = 'Bearer ' + token();
    const resp = await fetch(path, { method: opts.method || 'GET', headers, body: opts.body });
    return resp;
  }
  async function getJson(path) {
    const resp = await call(path, { headers: { Accept: 'application/json' } });
    const text = await resp.text();
    let body = null;
    try { body = JSON.parse(text); } catch (_) { body = null; }
    return { status: resp.status, body, resp, text };
  }
  function banner(text) { const b = $('banner'); b.textContent = text || ''; b.hidden = !text; }

  // ---- small DOM helpers -------------------------------------------------
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v; else if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  function setText(e, t) { t = String(t); if (e.textContent !== t) e.textContent = t; }
  function bytes(n) {
    if (n == null) return 'n/a';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']; let i = 0; let x = Number(n);
    while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
    return (i ? x.toFixed(1) : x) + ' ' + u[i];
  }
  function pct(x) { return (100 * x).toFixed(1) + '%'; }
  function bar(frac) {
    const s = el('span'); s.style.width = Math.max(0, Math.min(1, frac)) * 100 + '%';
    return el('span', { class: 'bar' }, s);
  }
  function ago(ms) { return ms ? Math.round((Date.now() - ms) / 1000) + ' s ago' : ''; }

  // ---- colours: one per node, by its place among all ids known ----------
  function ids() {
    const s = new Set(state.members.map((m) => m.id));
    if (state.ring) {
      for (const o of state.ring.owners) s.add(o.id);
      for (const a of state.ring.arcs) for (const p of a.pending) s.add(p);
    }
    return [...s].sort();
  }
  // The order is worked out once per poll (not once per arc drawn).
  function refreshOrder() { state.order = new Map(ids().map((id, i) => [id, i])); }
  function colour(id) {
    if (!state.order || !state.order.has(id)) refreshOrder();
    const i = state.order.has(id) ? state.order.get(id) : 0;
    return 'hsl(' + Math.round((i * 137.508) % 360) + ',62%,' + (i % 2 ? 58 : 46) + '%)';
  }
  function rackColour(rack, racks) {
    const i = racks.indexOf(rack);
    return 'hsl(' + Math.round((i * 83) % 360) + ',25%,' + (40 + (i % 3) * 12) + '%)';
  }

  // ---- the ring ----------------------------------------------------------
  // Angles: fraction 0 at the top, clockwise.
  function pt(r, f) { const a = f * 2 * Math.PI - Math.PI / 2; return (r * Math.cos(a)).toFixed(2) + ' ' + (r * Math.sin(a)).toFixed(2); }
  function band(from, to, r0, r1) {
    if (to - from >= 0.999999) { const m = from + 0.5; return band(from, m, r0, r1) + ' ' + band(m, to, r0, r1); }
    const large = to - from > 0.5 ? 1 : 0;
    return 'M' + pt(r1, from) + ' A' + r1 + ' ' + r1 + ' 0 ' + large + ' 1 ' + pt(r1, to) +
      ' L' + pt(r0, to) + ' A' + r0 + ' ' + r0 + ' 0 ' + large + ' 0 ' + pt(r0, from) + ' Z';
  }
  // Draws `ring` (GET /ui/api/ring); the DOM is rebuilt only when the arcs change.
  function drawRing(ring) {
    const sig = JSON.stringify([ring.arcs, ring.racks, ids()]);
    const svgEl = $('ring');
    svgEl.dataset.owners = String(ring.owners.length);
    svgEl.dataset.arcs = String(ring.arcs.length);
    setText($('ring-c1'), ring.owners.length + ' nodes · ' + ring.vnodes + ' vnodes');
    setText($('ring-c2'), 'rf ' + ring.rf + (ring.changing ? ' · change in flight' : '') + ' · seen by ' + ring.node);
    if (sig === state.ringSig) return;
    state.ringSig = sig;
    const arcs = document.createDocumentFragment();
    const pend = document.createDocumentFragment();
    for (const a of ring.arcs) {
      arcs.append(svg('path', { d: band(a.from, a.to, 120, 170), fill: colour(a.owner) }));
      if (a.pending.length) pend.append(svg('path', { d: band(a.from, a.to, 174, 188), fill: colour(a.pending[0]), class: 'pending' }));
    }
    $('ring-arcs').replaceChildren(arcs);
    $('ring-pending').replaceChildren(pend);
    const rackNames = [...new Set(Object.values(ring.racks || {}))].sort();
    const racks = document.createDocumentFragment();
    if (rackNames.length) {
      let run = null;
      const flush = () => { if (run) racks.append(svg('path', { d: band(run.from, run.to, 194, 200), fill: rackColour(run.rack, rackNames) })); };
      for (const a of ring.arcs) {
        const r = ring.racks[a.owner] || '';
        if (run && run.rack === r) run.to = a.to; else { flush(); run = { rack: r, from: a.from, to: a.to }; }
      }
      flush();
    }
    $('ring-racks').replaceChildren(racks);
    const rows = ring.owners.map((o) => el('tr', { 'data-node': o.id },
      el('td', {}, swatch(o.id), o.id), el('td', { text: o.rack || '' }), el('td', { class: 'num', text: o.vnodes }),
      el('td', { class: 'num', text: pct(o.primary) }), el('td', { class: 'num', text: pct(o.replicated) })));
    $('owners').tBodies[0].replaceChildren(...rows);
    const moving = ring.arcs.filter((a) => a.pending.length).length;
    const change = ring.in_flight.map((c) => c.kind + ' of ' + c.node + ' (driven by ' + c.by + ')').join('; ');
    $('ring-change').replaceChildren(ring.changing
      ? el('p', {}, el('b', { text: 'Change in flight: ' }), change || 'the ring is moving', ' — ' + moving + ' ranges moving')
      : el('p', { class: 'muted', text: 'No change in flight.' }));
  }
  function swatch(id) { const s = el('span', { class: 'sw' }); s.style.background = colour(id); return s; }
  function ringTip(ev) {
    const ring = state.ring; const tip = $('ring-tip');
    if (!ring || !ring.arcs.length) { tip.hidden = true; return; }
    const box = $('ring').getBoundingClientRect();
    const x = ev.clientX - box.left - box.width / 2; const y = ev.clientY - box.top - box.height / 2;
    const r = Math.hypot(x, y) * 430 / box.width;
    if (r < 120 || r > 200) { tip.hidden = true; return; }
    let f = (Math.atan2(y, x) + Math.PI / 2) / (2 * Math.PI); if (f < 0) f += 1;
    const a = ring.arcs.find((a) => (f > a.from && f <= a.to) || (f - 1 > a.from && f - 1 <= a.to));
    if (!a) { tip.hidden = true; return; }
    tip.textContent = '(' + a.start + ', ' + a.end + ']\nowner ' + a.owner + (ring.racks[a.owner] ? ' (rack ' + ring.racks[a.owner] + ')' : '') +
      (a.pending.length ? '\npending ' + a.pending.join(', ') : '');
    tip.style.left = ev.clientX - box.left + 12 + 'px'; tip.style.top = ev.clientY - box.top + 12 + 'px';
    tip.hidden = false;
  }

  // ---- members: rows kept and updated in place ---------------------------
  const rows = new Map();
  const COLS = ['id', 'status', 'phi', 'state', 'generation', 'rack', 'vnodes', 'keys', 'bytes', 'hints_for', 'hints_held', 'version', 'http'];
  function drawMembers() {
    const body = $('members').tBodies[0];
    const seen = new Set();
    let order = false;
    for (const m of state.members) {
      seen.add(m.id);
      let r = rows.get(m.id);
      if (!r) {
        const cells = {}; const tr = el('tr', { 'data-node': m.id });
        for (const c of COLS) { cells[c] = el('td', { class: ['phi', 'generation', 'vnodes', 'keys', 'bytes', 'hints_for', 'hints_held'].includes(c) ? 'num' : '' }); tr.append(cells[c]); }
        cells.id.append(swatch(m.id), el('span'));
        cells.status.append(el('span', { class: 'badge' }));
        r = { tr, cells }; rows.set(m.id, r); order = true;
      }
      const f = state.figures[m.id] || {}; const fig = (k, fmt) => (f[k] == null ? 'n/a' : fmt ? fmt(f[k]) : f[k]);
      r.tr.dataset.status = m.status; r.tr.className = m.status === 'down' ? 'down' : '';
      setText(r.cells.id.lastChild, m.id);
      const b = r.cells.status.firstChild; b.className = 'badge ' + m.status; setText(b, m.status);
      setText(r.cells.phi, Number(m.phi || 0).toFixed(2));
      setText(r.cells.state, m.state + (m.replacing ? ' (replacing)' : ''));
      setText(r.cells.generation, m.generation);
      setText(r.cells.rack, m.rack || '');
      setText(r.cells.vnodes, (m.tokens || []).length);
      setText(r.cells.keys, fig('keys'));
      setText(r.cells.bytes, fig('bytes', bytes));
      setText(r.cells.hints_for, m.hints_pending);
      setText(r.cells.hints_held, fig('hints_held'));
      setText(r.cells.version, fig('version'));
      r.cells.version.title = f.error || '';
      setText(r.cells.http, m.http_addr);
    }
    for (const [id, r] of rows) if (!seen.has(id)) { r.tr.remove(); rows.delete(id); }
    if (order) for (const m of state.members) body.append(rows.get(m.id).tr);
  }

  // ---- changes and repair ---------------------------------------------------
  async function drawChanges() {
    const ring = state.ring;
    $('in-flight').replaceChildren(ring && ring.in_flight.length
      ? el('p', {}, 'In flight (gossip): ' + ring.in_flight.map((c) => c.kind + ' ' + c.node + ' by ' + c.by).join('; '))
      : el('p', { class: 'muted', text: 'No change in flight (gossip).' }));
    const ch = await getJson('/cluster/changes');
    if (ch.status === 401) $('changes').replaceChildren(el('p', { class: 'err', text: 'The changes need the admin token.' }));
    else if (ch.body && ch.body.changes) {
      const cards = ch.body.changes.map((c) => {
        const streams = (c.streams || []).map((s) => el('tr', {},
          el('td', { text: s.from + ' → ' + s.to }), el('td', { text: '(' + s.range.start + ', ' + s.range.end + ']' }),
          el('td', { class: 'num', text: s.keys }), el('td', { class: 'num', text: bytes(s.bytes) + ' of ' + bytes(s.bytes_estimate) }),
          el('td', {}, bar(s.done ? 1 : s.bytes_estimate ? s.bytes / s.bytes_estimate : 0), s.done ? ' done' : '')));
        return el('div', { class: 'card' },
          el('b', { text: c.kind + ' ' + c.node + ' — ' + c.state }), ' ',
          el('span', { class: 'muted', text: 'started ' + ago(c.started_unix_ms) + (c.finished_unix_ms ? ', finished ' + ago(c.finished_unix_ms) : '') }),
          streams.length ? el('table', {}, el('tr', {}, ...['stream', 'range', 'keys', 'bytes', 'progress'].map((h) => el('th', { text: h }))), ...streams)
            : el('p', { class: 'muted', text: 'No stream received by ' + ch.body.node + '.' }));
      });
      $('changes').replaceChildren(...(cards.length ? cards : [el('p', { class: 'muted', text: ch.body.node + ' knows of no change.' })]));
    }
    const rp = await getJson('/internal/repair');
    if (rp.status === 401) $('repair').replaceChildren(el('p', { class: 'err', text: 'Repair progress needs the admin token.' }));
    else if (rp.body) {
      const p = rp.body;
      $('repair').replaceChildren(el('div', { class: 'card' },
        el('b', { text: p.running ? 'Pass running on ' + (state.ring ? state.ring.node : 'this node') : 'Last pass (not running)' }), ' ',
        bar(p.comparisons_total ? p.comparisons_done / p.comparisons_total : 0),
        ' ' + p.comparisons_done + ' of ' + p.comparisons_total + ' range comparisons, ' + p.elapsed_ms + ' ms; keys received ' +
        p.keys_received + ' (' + bytes(p.bytes_received) + '), sent ' + p.keys_sent + ' (' + bytes(p.bytes_sent) + ')'));
    }
    const mt = await call('/metrics');
    if (mt.ok) {
      const text = await mt.text(); const v = (name) => {
        const m = text.match(new RegExp('^' + name.replace(/[{}"=]/g, '\\$&') + ' ([0-9.e+-]+)$', 'm'));
        return m ? Number(m[1]) : null;
      };
      const last = v('qkv_repair_last_pass_timestamp_seconds');
      $('repair-totals').replaceChildren(el('p', {},
        'Since start: ' + v('qkv_repair_passes_total') + ' passes; keys received ' + v('qkv_repair_keys_total{direction="received"}') +
        ', sent ' + v('qkv_repair_keys_total{direction="sent"}') + '; leaves differing ' + v('qkv_repair_leaves_differing_total') +
        '; last pass ' + (last ? ago(last * 1000) : 'never') + '; oldest divergence ' + v('qkv_repair_divergence_max_age_seconds') + ' s.'));
    }
  }

  // ---- key inspector --------------------------------------------------------
  function keyPath(prefix) {
    return prefix + encodeURIComponent($('in-bucket').value) + '/keys/' + encodeURIComponent($('in-key').value);
  }
  async function locate() {
    const b = $('in-bucket').value; const k = $('in-key').value;
    if (!k) return;
    const loc = await getJson('/cluster/locate/' + encodeURIComponent(k) + '?bucket=' + encodeURIComponent(b));
    if (loc.status !== 200) { $('locate').replaceChildren(el('p', { class: 'err', text: 'locate: ' + loc.status + ' ' + (loc.body ? loc.body.message : '') })); return; }
    const l = loc.body;
    // Tokens pass 2^53: the digits are taken from the text, not the parsed number.
    const tok = (loc.text.match(/"token":(\d+)/) || [])[1] || l.token;
    const role = (id) => [l.targets.some((t) => t.node === id && !t.for) ? 'target' : null, l.down.includes(id) ? 'down' : null,
      l.pending.includes(id) ? 'pending owner' : null, ...l.targets.filter((t) => t.node === id && t.for).map((t) => 'stand-in for ' + t.for)].filter(Boolean).join(', ');
    const nodes = [...new Set([...l.replicas, ...l.pending, ...l.targets.map((t) => t.node)])];
    $('locate').replaceChildren(el('p', {}, 'token ' + tok + ', n=' + l.n + ', preference list: ',
      ...l.replicas.map((id, i) => el('span', {}, i ? ', ' : '', swatch(id), id)),
      l.pending.length ? ' · pending: ' + l.pending.join(', ') : ''));
    const copies = await Promise.all(nodes.map(async (id) => [id, await getJson('/ui/api/local/buckets/' + encodeURIComponent(b) + '/keys/' + encodeURIComponent(k) + '?node=' + encodeURIComponent(id))]));
    const head = el('tr', {}, ...['node', 'role', 'holds', 'context', 'timestamp'].map((h) => el('th', { text: h })));
    const trs = copies.map(([id, c]) => {
      let holds; let ctx = ''; let ts = '';
      if (c.status === 200) {
        holds = c.body.values.map((v) => show(v)).join(' | ') + (c.body.tombstone ? ' (tombstone)' : '') || '(only a tombstone)';
        ctx = c.body.context; ts = c.body.values.map((v) => new Date(v.timestamp_ms).toISOString()).join(' | ');
      } else if (c.status === 404) holds = 'nothing';
      else if (c.status === 401) holds = 'needs the admin token';
      else holds = 'n/a: ' + (c.body ? c.body.message : c.status);
      return el('tr', { 'data-node': id }, el('td', {}, swatch(id), id), el('td', { text: role(id) || 'replica' }),
        el('td', { text: holds }), el('td', { text: ctx }), el('td', { text: ts }));
    });
    $('copies').replaceChildren(el('table', { id: 'copies-table' }, head, ...trs));
  }
  function show(v) {
    if (v.deleted) return '(deleted)';
    let t; try { t = atob(v.value_base64); } catch (_) { t = ''; }
    const printable = /^[\x20-\x7e\n\t]*$/.test(t);
    t = printable ? JSON.stringify(t.length > 80 ? t.slice(0, 80) + '…' : t) : bytes(t.length) + ' of binary';
    return t + (v.content_type ? ' [' + v.content_type + ']' : '');
  }
  async function readKey() {
    const r = $('in-r').value;
    const resp = await call(keyPath('/buckets/') + '?r=' + r + '&trace=true', { headers: { Accept: 'application/json' } });
    let body = null; try { body = await resp.json(); } catch (_) { body = null; }
    const trace = (body && body.trace) || parseTrace(resp);
    if (resp.status === 200) {
      state.ctx = body.context;
      $('kv-result').replaceChildren(el('p', { class: 'ok' }, 'GET r=' + r + ': 200, ' + body.values.length + ' value(s): ' + body.values.map(show).join(' | ')));
    } else {
      state.ctx = resp.headers.get('X-Causal-Context');
      $('kv-result').replaceChildren(el('p', { class: 'err', text: 'GET r=' + r + ': ' + resp.status + ' ' + (body ? body.error + ': ' + body.message : '') }));
    }
    drawTrace(trace);
    locate();
  }
  async function writeKey() {
    const w = $('in-w').value; const headers = { 'Content-Type': 'text/plain' };
    if ($('in-ctx').checked && state.ctx) headers['X-Causal-Context'] = state.ctx;
    const resp = await call(keyPath('/buckets/') + '?w=' + w + '&trace=true', { method: 'PUT', headers, body: $('in-value').value });
    let body = null; if (resp.status !== 204) { try { body = await resp.json(); } catch (_) { body = null; } }
    if (resp.status === 204) {
      state.ctx = resp.headers.get('X-Causal-Context');
      $('kv-result').replaceChildren(el('p', { class: 'ok', id: 'put-ok', text: 'PUT w=' + w + ': 204 stored' }));
    } else {
      $('kv-result').replaceChildren(el('p', { class: 'err', text: 'PUT w=' + w + ': ' + resp.status + ' ' + (body ? body.error + ': ' + body.message : '') }));
    }
    drawTrace(parseTrace(resp));
    locate();
  }
  function parseTrace(resp) { try { return JSON.parse(resp.headers.get('X-Trace') || '[]'); } catch (_) { return []; } }
  // The trace as a timeline: one lane per node, each event a dot on the lane of the
  // node that logged it, with a line to the lane of a node its text names.
  function drawTrace(trace) {
    const known = ids().sort((a, b) => b.length - a.length);
    const lanes = [];
    const lane = (id) => { if (!lanes.includes(id)) lanes.push(id); return lanes.indexOf(id); };
    const items = trace.map((e) => {
      const from = lane(e.node);
      const named = known.find((id) => id !== e.node && new RegExp('(^|[^\\w-])' + id.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '($|[^\\w-])').test(e.event));
      return { e, from, to: named != null ? lane(named) : null };
    });
    const max = Math.max(1, ...trace.map((e) => e.at_us));
    const W = 860; const x = (us) => 90 + (us / max) * (W - 120); const y = (i) => 30 + i * 36;
    const t = $('timeline'); t.setAttribute('height', y(lanes.length) + 4);
    const g = document.createDocumentFragment();
    lanes.forEach((id, i) => {
      const l = svg('g', { class: 'lane', 'data-node': id });
      l.append(svg('line', { class: 'axis', x1: 80, x2: W - 20, y1: y(i), y2: y(i) }));
      const label = svg('text', { x: 8, y: y(i) + 4 }); label.textContent = id; l.append(label);
      g.append(l);
    });
    items.forEach(({ e, from, to }, n) => {
      if (to != null) g.append(svg('line', { class: 'msg', x1: x(e.at_us), y1: y(from), x2: x(e.at_us), y2: y(to) }));
      g.append(svg('circle', { cx: x(e.at_us), cy: y(from), r: 4, fill: colour(e.node) }));
      if (to != null) g.append(svg('circle', { cx: x(e.at_us), cy: y(to), r: 3, fill: '#fff', stroke: colour(lanes[to]) }));
      const num = svg('text', { x: x(e.at_us) - 3, y: y(from) - 8 }); num.textContent = String(n + 1); g.append(num);
    });
    const axis = svg('text', { x: W - 110, y: 14 }); axis.textContent = max + ' µs'; g.append(axis);
    t.replaceChildren(g);
    $('trace').tBodies[0].replaceChildren(...trace.map((e, n) => el('tr', {}, el('td', { class: 'num', text: n + 1 }),
      el('td', { class: 'num', text: e.at_us + ' µs' }), el('td', { text: e.node }), el('td', { text: e.event }))));
  }

  // ---- reports ----------------------------------------------------------------
  async function blobUrl(path) {
    if (state.blobs[path]) return state.blobs[path];
    const resp = await call(path);
    if (!resp.ok) return null;
    state.blobs[path] = URL.createObjectURL(await resp.blob());
    return state.blobs[path];
  }
  async function drawReports() {
    const r = await getJson('/ui/reports');
    if (r.status !== 200) {
      $('reports').replaceChildren(el('p', { class: 'muted', text: r.status === 404 ? 'No reports directory: start qkvd with --ui-reports-dir DIR (a folder qkv exp writes its reports to).' : 'Reports: ' + r.status + ' ' + (r.body ? r.body.message : '') }));
      return;
    }
    const files = r.body.files;
    const sig = JSON.stringify(files);
    if (sig === state.reportsSig) return;
    state.reportsSig = sig;
    const svgs = files.filter((f) => f.path.endsWith('.svg'));
    const others = files.filter((f) => !f.path.endsWith('.svg'));
    const thumbs = el('div', { class: 'thumbs' });
    for (const f of svgs) {
      const img = el('img', { alt: f.path });
      thumbs.append(el('figure', {}, img, el('figcaption', { text: f.path + ' · ' + new Date(f.modified_unix_ms).toISOString() })));
      const url = '/ui/reports/' + f.path.split('/').map(encodeURIComponent).join('/') + '?m=' + f.modified_unix_ms;
      blobUrl(url).then((u) => { if (u) img.src = u; });
    }
    const list = el('ul', {}, ...others.map((f) => {
      const b = el('button', { class: 'link', type: 'button', text: f.path });
      b.addEventListener('click', async () => {
        const resp = await call('/ui/reports/' + f.path.split('/').map(encodeURIComponent).join('/'));
        const text = await resp.text();
        $('report-view').replaceChildren(el('h2', { text: f.path }), el('pre', { text: text.length > 200000 ? text.slice(0, 200000) + '\n…' : text }));
      });
      return el('li', {}, b, ' ' + bytes(f.bytes));
    }));
    $('reports').replaceChildren(el('p', { class: 'muted', text: files.length + ' files' + (r.body.truncated ? ' (listing cut short)' : '') }), thumbs, list);
  }

  // ---- polling ------------------------------------------------------------------
  async function poll() {
    state.tick++;
    try {
      const [ring, members] = await Promise.all([getJson('/ui/api/ring'), getJson('/cluster/members')]);
      if (ring.status === 401 || members.status === 401) {
        banner(token() ? 'The token was refused (401): type another one.' : 'This node needs a bearer token: type it above.');
      } else banner('');
      if (members.status === 200) state.members = members.body;
      if (ring.status === 200) { state.ring = ring.body; setText($('node-info'), 'node ' + ring.body.node); }
      refreshOrder();
      const wantFigures = state.view === 'members' && (state.tick % FIGURES_EVERY === 1 || !Object.keys(state.figures).length);
      if (wantFigures) {
        const f = await getJson('/ui/api/nodes');
        if (f.status === 200) { state.figures = f.body.figures; setText($('node-info'), 'node ' + f.body.node + ' · qkvd ' + f.body.version); }
      }
      if (state.view === 'ring' && state.ring) drawRing(state.ring);
      if (state.view === 'members') drawMembers();
      if (state.view === 'changes') await drawChanges();
      if (state.view === 'reports' && Date.now() - state.reportsAt > 10000) { state.reportsAt = Date.now(); await drawReports(); }
      setText($('poll-status'), 'updated ' + new Date().toLocaleTimeString());
    } catch (e) {
      setText($('poll-status'), 'poll failed: ' + e.message);
    }
    setTimeout(poll, POLL_MS);
  }
  function show_view(v) {
    state.view = v; state.reportsAt = 0;
    for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.view === v);
    for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== 'view-' + v;
    if (v === 'ring') state.ringSig = '';
  }

  // ---- wiring -------------------------------------------------------------------
  for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => show_view(b.dataset.view));
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = ''; setText($('login-state'), token() ? 'token set' : '');
    state.figures = {};
  });
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); setText($('login-state'), ''); });
  setText($('login-state'), token() ? 'token set' : '');
  $('locate-form').addEventListener('submit', (ev) => { ev.preventDefault(); locate(); });
  $('get-btn').addEventListener('click', readKey);
  $('put-btn').addEventListener('click', writeKey);
  $('ring').addEventListener('mousemove', ringTip);
  $('ring').addEventListener('mouseleave', () => { $('ring-tip').hidden = true; });
  const hash = location.hash.slice(1);
  if (['ring', 'members', 'changes', 'inspector', 'reports'].includes(hash)) show_view(hash);
  // For the browser test and for trying the drawing at scale: draw a ring given as data.
  window.qkvConsole = { drawRing: (ring) => { state.ring = ring; refreshOrder(); drawRing(ring); } };
  poll();
})();
