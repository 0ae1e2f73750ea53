// The page: layers (overview and viewport images on one canvas, partials on another), rulers,
// tools, panels. Everything the page shows comes from the backend; edits go to the backend, which
// keeps the document and history and answers with edit events (only what changed).
import { call, upload, loadImage, subscribe, windowMode, token } from './api.js';
import { View, timeTicks, freqTicks } from './view.js';
import { Player } from './playback.js';
import { PartialStore, VirtualList, PartialsLayer, drawHandles, handlesOf, hitTest, boxSelect, selectionStats } from './partials.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const canvas = $('canvas');
const ctx = canvas.getContext('2d');
const layer = $('partials-layer');
const lctx = layer.getContext('2d');
const view = new View();
const partialsLayer = new PartialsLayer();
const ERASER_PX = 6; // the eraser's radius in CSS pixels
// edits: {label, at, drawnAt} of the last edits and snapshots (ms, page clock) and the frame that
// first showed them.
const metrics = { viewports: [], overviewDrawnAt: null, lastInputAt: 0, requests: 0, longestDrawMs: 0,
  longestPartialsMs: 0, edits: [], snapshots: [], partialsDrawn: 0, verticesDrawn: 0, partialsDecimated: 0, drawsMs: [] };
window.somaMetrics = metrics;

const app = {
  file: null, overview: null, viewport: null, store: new PartialStore(), selected: new Set(), tool: 'pan',
  doc: null, history: null, stroke: null, pending: [], answered: new Set(), requestedKey: null, latestRequest: 0,
  shownRequest: 0, dpr: 1, drag: null, box: null, handleDrag: null, dirty: true, layerDirty: true, viewFrame: null,
  cursor: null, cursorFrame: null,
  sent: new Map(), // request id -> { key, sentAt, answeredAt } of view requests not yet shown
  unshown: [], // edits applied but not drawn yet (for metrics)
  snapshotSeq: 0, queuedEdits: null,
  playCursor: null, // s: where Play starts when nothing is selected (a click with the pan tool or on the time ruler)
};
const list = new VirtualList($('partial-scroller'), {
  onClick: (id, add) => select(id, add),
  onMute: (p) => guarded(() => call('update_partial', { id: p.id, is_muted: !p.is_muted })),
});

// ------------------------------------------------------------------------------ errors / status
function showError(message) {
  const box = $('error');
  box.querySelector('.msg').textContent = message;
  box.hidden = false;
  $('status').dataset.state = 'error';
}
$('error').querySelector('.close').addEventListener('click', () => {
  $('error').hidden = true;
  if ($('status').dataset.state === 'error') $('status').dataset.state = app.file ? 'ready' : 'empty';
});

async function guarded(fn) {
  try { return await fn(); } catch (e) { showError(`${e.type || 'Error'}: ${e.message}`); return undefined; }
}

const ms = (s) => `${(s * 1000).toFixed(0)} ms`;
function renderStatus(st) {
  if (!st) return;
  const v = st.viewport, s = st.snap;
  const vState = v.busy ? 'computing' : 'idle';
  const sState = s.busy ? `snapping${s.queued ? ` (+${s.queued} queued)` : ''}` : 'idle';
  $('status-worker').textContent = `viewport: ${vState} (${v.workers} proc) · snap: ${sState} (${s.workers} proc) · ${st.start_method}`;
  $('status-worker').dataset.viewport = vState;
  const parts = [];
  if (v.last) parts.push(`${v.last.method.toUpperCase()} ${v.last.window_s.toFixed(2)} s: compute ${ms(v.last.compute_s ?? 0)}, total ${ms(v.last.total_s ?? 0)}`);
  if (s.last) parts.push(`snap ${s.last.points} pts in ${ms(s.last.total_s ?? 0)}`);
  if (st.overview) parts.push(`overview ${ms(st.overview.total_s)} (decode ${ms(st.overview.decode_s)})`);
  $('status-timings').textContent = parts.join(' · ');
  if ($('status').dataset.state !== 'error' && $('status').dataset.state !== 'loading') {
    $('status').dataset.state = v.busy ? 'computing' : (app.file ? 'ready' : 'empty');
  }
}

// -------------------------------------------------------------------------------- drawing
function resize() {
  const stage = $('stage');
  app.dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.min(2560, Math.round(stage.clientWidth * app.dpr)));
  const h = Math.max(2, Math.min(1600, Math.round(stage.clientHeight * app.dpr)));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w; canvas.height = h; layer.width = w; layer.height = h; view.w = w; view.h = h;
    for (const r of [$('freq-ruler'), $('time-ruler')]) {
      r.width = Math.round(r.clientWidth * app.dpr); r.height = Math.round(r.clientHeight * app.dpr);
    }
    invalidate(); scheduleView();
  }
}
new ResizeObserver(resize).observe($('stage'));
window.addEventListener('resize', resize);

// invalidate(): both layers (the view moved); invalidatePartials(): only the partials layer.
function invalidate() {
  app.dirty = true; app.layerDirty = true;
  if (!app.frame) app.frame = requestAnimationFrame(draw);
}
function invalidatePartials() {
  app.layerDirty = true;
  if (!app.frame) app.frame = requestAnimationFrame(draw);
}

function drawLayer(layer) {
  if (!layer) return;
  ctx.setTransform(...view.imageTransform(layer.geom));
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(layer.canvas, 0, 0);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
}

function polyline(c, points) {
  c.beginPath();
  points.forEach(([t, f], i) => { const x = view.x(t), y = view.y(f); if (i) c.lineTo(x, y); else c.moveTo(x, y); });
}

function draw() {
  const started = performance.now();
  app.frame = null;
  if (app.dirty) paint();
  if (app.layerDirty) paintPartials();
  const took = performance.now() - started;
  metrics.longestDrawMs = Math.max(metrics.longestDrawMs || 0, took);
  metrics.drawsMs.push(took); // each frame's drawing (ms), the last 1,000
  if (metrics.drawsMs.length > 1000) metrics.drawsMs.splice(0, metrics.drawsMs.length - 1000);
}

function paintPartials() {
  const started = performance.now();
  app.layerDirty = false;
  lctx.setTransform(1, 0, 0, 1, 0, 0);
  lctx.clearRect(0, 0, layer.width, layer.height);
  if (!app.file) return;
  const drawn = partialsLayer.draw(lctx, view, app.store, app.selected, app.dpr);
  metrics.partialsDrawn = drawn.partials; metrics.verticesDrawn = drawn.vertices; metrics.partialsDecimated = drawn.decimated;
  metrics.partialsFromCache = (metrics.partialsFromCache || 0) + (drawn.cached ? 1 : 0);
  const one = app.selected.size === 1 ? app.store.get([...app.selected][0]) : null;
  if (one && app.tool === 'select') drawHandles(lctx, view, one, app.dpr);
  lctx.strokeStyle = 'rgba(255,255,255,0.8)'; lctx.lineWidth = 1.5 * app.dpr; lctx.setLineDash([5 * app.dpr, 4 * app.dpr]);
  for (const s of app.pending) { polyline(lctx, s.trace); lctx.stroke(); }
  lctx.setLineDash([]);
  if (app.stroke && app.stroke.length > 1) {
    lctx.strokeStyle = app.tool === 'eraser' ? 'rgba(255,120,120,0.6)' : '#fff';
    lctx.lineWidth = (app.tool === 'eraser' ? 2 * ERASER_PX : 1.5) * app.dpr; lctx.lineCap = 'round'; lctx.lineJoin = 'round';
    polyline(lctx, app.stroke); lctx.stroke(); lctx.lineCap = 'butt';
  }
  if (app.box) {
    const { x0, y0, x1, y1 } = app.box;
    lctx.strokeStyle = '#9cf'; lctx.lineWidth = app.dpr; lctx.setLineDash([4 * app.dpr, 3 * app.dpr]);
    lctx.fillStyle = 'rgba(120,180,255,0.12)';
    lctx.fillRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    lctx.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    lctx.setLineDash([]);
  }
  if (app.handleDrag && app.handleDrag.to) {
    const h = app.handleDrag;
    lctx.strokeStyle = '#fff'; lctx.lineWidth = 1.5 * app.dpr; lctx.setLineDash([5 * app.dpr, 4 * app.dpr]);
    lctx.beginPath(); lctx.moveTo(h.from[0], h.from[1]); lctx.lineTo(h.to[0], h.to[1]); lctx.stroke(); lctx.setLineDash([]);
  }
  const now = performance.now();
  metrics.longestPartialsMs = Math.max(metrics.longestPartialsMs, now - started);
  for (const e of app.unshown) metrics.edits.push({ ...e, drawnAt: now, drawMs: now - started });
  if (metrics.edits.length > 200) metrics.edits.splice(0, metrics.edits.length - 200);
  app.unshown = [];
  layer.dataset.partials = String(app.store.size);
  layer.dataset.pending = String(app.pending.length);
}

function paint() {
  app.dirty = false;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (!app.file) { drawRulers(); return; }
  canvas.dataset.view = [view.t0, view.t1, view.fmin, view.fmax].join(',');
  drawLayer(app.overview);
  if (app.overview && canvas.dataset.overview !== 'drawn') {
    canvas.dataset.overview = 'drawn';
    metrics.overviewDrawnAt = performance.now();
  }
  drawLayer(app.viewport);
  placePlayhead(player.playing ? player.position() : null);
  if (app.viewport && canvas.dataset.viewportRequest !== String(app.viewport.geom.request_id)) {
    canvas.dataset.viewportRequest = String(app.viewport.geom.request_id);
    canvas.dataset.viewportMethod = app.viewport.geom.method;
    metrics.viewports.push({ id: app.viewport.geom.request_id, at: performance.now(), method: app.viewport.geom.method,
      key: app.viewport.key, timings: app.viewport.geom.timings, window_s: app.viewport.geom.t1 - app.viewport.geom.t0,
      page: app.viewport.page });
  }
  drawRulers();
}

// ------------------------------------------------------------------------------- playback
const player = new Player({
  duration: () => (app.file ? app.file.duration : 0),
  sampleRate: () => app.file.sample_rate,
  startTime: () => playStart(),
  onTick: (t) => followPlayhead(t),
  onState: (on) => {
    $('play').textContent = on ? '■ Stop' : '▶ Play';
    $('play').setAttribute('aria-pressed', String(on));
    if (!on) placePlayhead(null);
  },
  onError: (message) => showError(message),
});

// Play starts at the earliest selected partial, else at the clicked time, else at the view's left edge.
function playStart() {
  const sel = [...app.selected].map((id) => app.store.get(id)).filter(Boolean);
  if (sel.length) return Math.min(...sel.map((p) => p.t0));
  if (app.playCursor !== null && app.playCursor < app.file.duration) return app.playCursor;
  return view.t0;
}

// The playhead (or, stopped, the play cursor) as a line over the spectrogram; moved by a CSS
// transform, so playing never repaints the layers.
function placePlayhead(t) {
  const el = $('playhead');
  const at = t === null ? app.playCursor : t;
  if (!app.file || at === null || at < view.t0 || at > view.t1) { el.hidden = true; return; }
  el.hidden = false;
  el.classList.toggle('cursor', t === null);
  el.style.transform = `translateX(${view.x(at) / app.dpr}px)`;
  el.dataset.time = String(at);
}

// While playing, the view pages along when the playhead leaves it (long files).
function followPlayhead(t) {
  if (t !== null && app.file && !app.drag && (t > view.t1 || t < view.t0)) {
    const span = view.t1 - view.t0;
    view._setT(t - 0.02 * span, span);
    invalidate(); invalidatePartials(); scheduleView();
  }
  placePlayhead(t);
}

function setPlayCursor(t) {
  app.playCursor = Math.min(Math.max(t, 0), app.file.duration);
  if (player.playing) player.play(app.playCursor); else placePlayhead(null);
}

$('play').addEventListener('click', (e) => { e.currentTarget.blur(); if (app.file) player.toggle(); });
$('mix').addEventListener('input', (e) => player.setMix(parseFloat(e.target.value)));
$('speed').addEventListener('change', (e) => { player.setSpeed(parseFloat(e.target.value)); e.target.blur(); });
$('time-ruler').addEventListener('click', (e) => {
  if (!app.file) return;
  const r = e.currentTarget.getBoundingClientRect();
  setPlayCursor(view.t((e.clientX - r.left) / r.width * canvas.width));
});

function writeCursor() {
  app.cursorFrame = null;
  if (!app.cursor || !app.file) return;
  const [x, y] = app.cursor;
  $('status-cursor').textContent = `${view.t(x).toFixed(3)} s · ${view.f(y).toFixed(1)} Hz`;
}

function drawRulers() {
  const fr = $('freq-ruler'), tr = $('time-ruler');
  const fc = fr.getContext('2d'), tc = tr.getContext('2d');
  fc.fillStyle = tc.fillStyle = '#161618';
  fc.fillRect(0, 0, fr.width, fr.height); tc.fillRect(0, 0, tr.width, tr.height);
  if (!app.file) return;
  const font = `${11 * app.dpr}px system-ui, sans-serif`;
  fc.font = tc.font = font; fc.fillStyle = tc.fillStyle = '#bbb'; fc.strokeStyle = tc.strokeStyle = '#777';
  const sy = fr.height / canvas.height;
  fc.textAlign = 'right'; fc.textBaseline = 'middle';
  for (const { f, label } of freqTicks(view, canvas.height / app.dpr)) {
    const y = view.y(f) * sy;
    fc.beginPath(); fc.moveTo(fr.width - 6 * app.dpr, y); fc.lineTo(fr.width, y); fc.stroke();
    fc.fillText(label, fr.width - 8 * app.dpr, y);
  }
  fc.save(); fc.translate(9 * app.dpr, 14 * app.dpr); fc.textAlign = 'left'; fc.fillText('Hz', 0, 0); fc.restore();
  const sx = tr.width / canvas.width;
  tc.textAlign = 'center'; tc.textBaseline = 'top';
  for (const { t, label } of timeTicks(view, canvas.width / app.dpr)) {
    const x = view.x(t) * sx;
    tc.beginPath(); tc.moveTo(x, 0); tc.lineTo(x, 5 * app.dpr); tc.stroke();
    const half = tc.measureText(label).width / 2;
    tc.fillText(label, Math.min(Math.max(x, half + 2), tr.width - half - 2), 7 * app.dpr);
  }
}

// -------------------------------------------------------------------------- viewport requests
// At most one request per animation frame: a zoom storm asks for the view of each frame it
// shows and the backend keeps only the latest (the engine terminates superseded computations).
function scheduleView() {
  if (!app.file || app.viewFrame) return;
  app.viewFrame = requestAnimationFrame(() => { app.viewFrame = null; requestView(); });
}

async function requestView(force = false) {
  if (!app.file) return;
  const key = view.key();
  if (!force && key === app.requestedKey) return;
  app.requestedKey = key;
  const body = { t0: view.t0, t1: view.t1, fmin: view.fmin, fmax: view.fmax, width: canvas.width, height: canvas.height };
  metrics.requests++;
  const sentAt = performance.now();
  const r = await guarded(() => call('view', body));
  if (r && r.request_id > app.shownRequest) {
    app.latestRequest = Math.max(app.latestRequest, r.request_id);
    app.sent.set(r.request_id, { key, sentAt, answeredAt: performance.now() });
  }
}

async function onViewport(ev) {
  if (ev.request_id < app.shownRequest) return;
  const eventAt = performance.now();
  let img;
  try { img = await loadImage(ev.blob); } catch (e) { return; } // replaced meanwhile by a fresher one
  if (ev.request_id < app.shownRequest) { img.bitmap.close(); return; }
  app.shownRequest = ev.request_id;
  const sent = app.sent.get(ev.request_id) || {};
  for (const id of app.sent.keys()) if (id <= ev.request_id) app.sent.delete(id);
  if (app.viewport) app.viewport.canvas.close();
  // page: when this request was sent and answered, its event arrived, its bitmap was ready (ms
  // on the page's clock), and the image worker's fetch / colour / bitmap times.
  app.viewport = { geom: { ...ev, width: img.width, height: img.height }, canvas: img.bitmap, key: sent.key,
    page: { sentAt: sent.sentAt, answeredAt: sent.answeredAt, eventAt, imageAt: performance.now(), ...img.ms } };
  app.dirty = true; // the image layer only
  if (!app.frame) app.frame = requestAnimationFrame(draw);
}

// While a long file decodes: the overview of what is there so far, inside the loading box.
async function onPartialOverview(ev) {
  if (!app.opening) return;
  let img;
  try { img = await loadImage(ev.overview.blob); } catch (e) { return; } // replaced meanwhile
  const c = $('partial-overview');
  if (!app.opening) { img.bitmap.close(); return; }
  c.width = img.width; c.height = img.height;
  c.getContext('2d').drawImage(img.bitmap, 0, 0);
  img.bitmap.close();
  c.hidden = false;
  c.dataset.fraction = String(ev.fraction);
  $('loading').querySelector('.detail').textContent = `overview ${(100 * ev.fraction).toFixed(0)} % of the file so far`;
}

async function onOverview(ov) {
  const img = await loadImage(ov.blob);
  if (app.overview) app.overview.canvas.close();
  app.overview = { geom: { ...ov, width: img.width, height: img.height }, canvas: img.bitmap };
  invalidate();
}

// ------------------------------------------------------------------------------- document
// A whole document (open, load, reconnect): metadata in the event, all points in one float32 blob.
// Edits that arrive while its points are being fetched are newer: they wait and follow it.
async function setDocument(doc) {
  const seq = ++app.snapshotSeq;
  const receivedAt = performance.now();
  app.queuedEdits = [];
  let block = new Float32Array(0), queued = [];
  try {
    if (doc.partials.length) {
      const res = await fetch(`/blob/${doc.points_blob}`, { headers: { 'X-Soma-Token': token } });
      if (!res.ok) throw new Error(`the document's points (blob ${doc.points_blob}) are gone`);
      block = new Float32Array(await res.arrayBuffer());
    }
  } finally {
    if (seq === app.snapshotSeq) { queued = app.queuedEdits || []; app.queuedEdits = null; }
  }
  if (seq !== app.snapshotSeq) return; // a newer snapshot arrived meanwhile
  const fetchedAt = performance.now();
  app.doc = doc;
  app.store.setSnapshot(doc.partials, block);
  for (const id of [...app.selected]) if (!app.store.get(id)) app.selected.delete(id);
  setHistory(doc);
  setSettings(doc.settings);
  // Stages of a whole document on the page (ms, page clock): event, points fetched, store built.
  const stages = { at: receivedAt, fetchedAt, storedAt: performance.now(), partials: app.store.size };
  app.unshown.push({ label: 'snapshot', ...stages });
  metrics.snapshots.push(stages);
  renderList();
  invalidatePartials();
  for (const ev of queued) applyEdit(ev);
}

// One edit, undo or redo: only the partials it touched.
function applyEdit(ev) {
  if (app.queuedEdits) { app.queuedEdits.push(ev); return; }
  app.store.applyEdit(ev);
  for (const id of ev.removed) app.selected.delete(id);
  if (ev.project_path && app.doc) app.doc.project_path = ev.project_path; // a save (before its answer)
  setHistory(ev.history);
  if (ev.settings) { app.doc.settings = ev.settings; setSettings(ev.settings); requestView(true); }
  if (ev.added.length || ev.changed.length || ev.removed.length) {
    app.unshown.push({ label: ev.label, at: performance.now(), ids: [...ev.added, ...ev.changed].map((p) => p.id) });
    renderList();
    invalidatePartials();
  }
}

function setHistory(h) {
  app.history = h;
  $('undo').disabled = !h.can_undo; $('undo').title = h.undo_label ? `Undo ${h.undo_label} (Ctrl+Z)` : 'Undo (Ctrl+Z)';
  $('redo').disabled = !h.can_redo; $('redo').title = h.redo_label ? `Redo ${h.redo_label} (Ctrl+Shift+Z)` : 'Redo (Ctrl+Shift+Z)';
  document.body.dataset.dirty = String(!!h.dirty);
  showDirty();
}

function setSettings(settings) {
  for (const input of $('settings-form').querySelectorAll('input')) {
    if (document.activeElement !== input) input.value = settings[input.name];
  }
}

function renderList() {
  list.set(app.store.sorted, app.selected);
  $('partial-count').textContent = String(app.store.size);
  renderHud();
}

function renderHud() {
  const n = app.selected.size;
  $('delete').disabled = n === 0;
  const hud = $('hud');
  hud.hidden = n === 0;
  if (!n) return;
  const s = selectionStats(app.store, app.selected);
  const hz = (f) => (f >= 1000 ? `${(f / 1000).toFixed(2)} kHz` : `${f.toFixed(1)} Hz`);
  $('hud-count').textContent = `${s.count} selected`;
  $('hud-time').textContent = `${s.t0.toFixed(3)}–${s.t1.toFixed(3)} s`;
  $('hud-freq').textContent = `${hz(s.fmin)}–${hz(s.fmax)}`;
  $('hud-amp').textContent = `mean amplitude ${s.amp.toFixed(3)}`;
  const allMuted = [...app.selected].every((id) => app.store.get(id) && app.store.get(id).is_muted);
  $('hud-mute').textContent = allMuted ? 'Unmute' : 'Mute';
  $('hud-merge').disabled = n < 2;
}

function select(id, add) {
  if (!add) app.selected.clear();
  if (id !== null) { if (add && app.selected.has(id)) app.selected.delete(id); else app.selected.add(id); }
  if (id !== null) list.scrollTo(id);
  renderList(); invalidatePartials();
}

function selectMany(ids, add) {
  if (!add) app.selected.clear();
  for (const id of ids) app.selected.add(id);
  renderList(); invalidatePartials();
}

function deleteSelected() {
  if (!app.selected.size) return;
  const ids = [...app.selected];
  metrics.deleteAskedAt = performance.now();
  guarded(async () => { await call('delete_partials', { ids }); app.selected.clear(); renderList(); });
}

function mergeSelected() {
  if (app.selected.size < 2) return;
  guarded(async () => {
    const r = await call('merge_partials', { ids: [...app.selected] });
    app.selected = new Set(r.changed); renderList(); invalidatePartials();
  });
}

function muteSelected() {
  if (!app.selected.size) return;
  const ids = [...app.selected];
  const allMuted = ids.every((id) => app.store.get(id) && app.store.get(id).is_muted);
  guarded(() => call('set_muted', { ids, is_muted: !allMuted }));
}

// --------------------------------------------------------------------------------- events
function onEvent(ev) {
  switch (ev.type) {
    case 'progress': {
      if (ev.stage === 'kernels') { // first run only: the numba kernels are compiled and cached
        const done = ev.fraction >= 1;
        $('loading').hidden = done && !app.opening; $('empty').hidden = !done || !!app.file || app.opening;
        if (!done || !app.opening) {
          $('progress').value = ev.fraction;
          $('loading').querySelector('.stage-name').textContent = `${ev.label || 'preparing kernels (first run only)'}…`;
          $('loading').querySelector('.detail').textContent = ev.message || '';
        }
        break;
      }
      app.opening = ev.fraction < 1 || ev.stage === 'decode';
      $('loading').hidden = false; $('empty').hidden = true;
      $('status').dataset.state = 'loading';
      const overall = ev.stage === 'decode' ? 0.5 * ev.fraction : 0.5 + 0.5 * ev.fraction;
      $('progress').value = overall;
      $('loading').querySelector('.stage-name').textContent = ev.stage === 'decode' ? 'Decoding audio…' : 'Computing overview…';
      $('loading').querySelector('.detail').textContent = `${ev.stage} ${(100 * ev.fraction).toFixed(0)} %`;
      break;
    }
    case 'partial_overview': onPartialOverview(ev); break;
    case 'opened': {
      player.stop(); player.prepare(); app.playCursor = null;
      app.opening = false;
      $('partial-overview').hidden = true;
      $('loading').hidden = true; $('empty').hidden = true; $('error').hidden = true;
      metrics.opens = (metrics.opens || 0) + 1;
      app.file = ev.file; app.viewport = null; app.overview = null; app.shownRequest = 0; app.requestedKey = null; app.pending = [];
      app.sent.clear();
      delete canvas.dataset.viewportMethod; delete canvas.dataset.viewportRequest;
      canvas.dataset.overview = 'loading';
      $('status').dataset.state = 'ready';
      $('status-file').textContent = `${ev.file.name} · ${ev.file.duration.toFixed(2)} s · ${ev.file.sample_rate} Hz`;
      showDirty();
      view.setLimits({ t0: 0, t1: ev.file.duration, fmin: ev.file.fmin, fmax: ev.file.fmax });
      guarded(() => setDocument(ev.document));
      onOverview(ev.overview).then(() => requestView(true));
      break;
    }
    case 'overview': onOverview(ev.overview).then(() => requestView(true)); break;
    case 'viewport': onViewport(ev); break;
    case 'document': guarded(() => setDocument(ev.document)); break;
    case 'edit': applyEdit(ev); break;
    case 'snapped': settleStroke(ev.request_id); break;
    case 'status': renderStatus(ev.status); break;
    case 'synth': if (player.playing) player.handover(); break;
    case 'closed': { // a failed open could not bring the previous file back: no file is shown
      app.file = null; app.viewport = null; app.overview = null; canvas.dataset.overview = 'none';
      $('empty').hidden = false; guarded(() => setDocument(ev.document)); invalidate(); break;
    }
    case 'error': {
      if (ev.op === 'open') { app.opening = false; $('partial-overview').hidden = true; $('loading').hidden = true; if (!app.file) $('empty').hidden = false; }
      if (ev.op === 'snap') settleStroke(ev.request_id);
      showError(`${ev.op} failed — ${ev.error.type}: ${ev.error.message}`);
      break;
    }
    default: break;
  }
}

// A stroke's dashed line goes when its answer (partial or error) arrives, whichever comes first:
// the answer or the reply to the call that sent it.
function settleStroke(rid) {
  app.answered.add(rid);
  if (app.answered.size > 500) app.answered.delete(app.answered.values().next().value);
  app.pending = app.pending.filter((s) => s.id !== rid);
  invalidatePartials();
}

// ------------------------------------------------------------------------------- pointer
function canvasPoint(e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}

canvas.addEventListener('wheel', (e) => {
  if (!app.file) return;
  e.preventDefault();
  metrics.lastInputAt = performance.now();
  const [x, y] = canvasPoint(e);
  const d = e.deltaY !== 0 ? e.deltaY : e.deltaX;
  const factor = Math.exp(d * 0.0015);
  if (e.ctrlKey || e.altKey || e.shiftKey) view.zoomY(y, factor); else view.zoomX(x, factor);
  invalidate(); scheduleView();
}, { passive: false });

function handleAt(x, y) {
  if (app.tool !== 'select' || app.selected.size !== 1) return null;
  const p = app.store.get([...app.selected][0]);
  if (!p) return null;
  for (const h of handlesOf(view, p)) if (Math.hypot(h.x - x, h.y - y) <= 8 * app.dpr) return { ...h, id: p.id };
  return null;
}

canvas.addEventListener('pointerdown', (e) => {
  if (!app.file || e.button > 1) return;
  canvas.setPointerCapture(e.pointerId);
  const [x, y] = canvasPoint(e);
  const handle = e.button === 0 ? handleAt(x, y) : null;
  if ((app.tool === 'pencil' || app.tool === 'eraser') && e.button === 0) {
    app.stroke = [[view.t(x), view.f(y)]];
  } else if (handle) {
    app.handleDrag = { ...handle, from: [handle.x, handle.y], to: null };
  } else {
    app.drag = { x, y, x0: x, y0: y, moved: false, pan: app.tool === 'pan' || e.button === 1, shift: e.shiftKey };
  }
});

canvas.addEventListener('pointermove', (e) => {
  const [x, y] = canvasPoint(e);
  if (app.file) { // the readout is written once per frame, not once per event
    app.cursor = [x, y];
    if (!app.cursorFrame) app.cursorFrame = requestAnimationFrame(writeCursor);
  }
  if (app.stroke) { app.stroke.push([view.t(x), view.f(y)]); invalidatePartials(); return; }
  if (app.handleDrag) { app.handleDrag.to = [x, y]; invalidatePartials(); return; }
  if (app.drag) {
    const dx = x - app.drag.x, dy = y - app.drag.y;
    if (Math.abs(x - app.drag.x0) + Math.abs(y - app.drag.y0) > 2) app.drag.moved = true;
    if (app.drag.pan && app.drag.moved) {
      metrics.lastInputAt = performance.now();
      const was = view.key();
      view.pan(dx, dy); app.drag.x = x; app.drag.y = y;
      if (view.key() !== was) { invalidate(); scheduleView(); } // at a limit nothing moves: nothing to draw
    } else if (!app.drag.pan && app.drag.moved && app.tool === 'select') {
      app.box = { x0: app.drag.x0, y0: app.drag.y0, x1: x, y1: y }; invalidatePartials();
    }
  }
});

canvas.addEventListener('pointerup', (e) => {
  const [x, y] = canvasPoint(e);
  if (app.stroke) {
    const stroke = app.stroke; app.stroke = null;
    metrics.strokeUpAt = performance.now();
    if (app.tool === 'eraser') finishErase(stroke); else finishStroke(stroke);
  } else if (app.handleDrag) {
    const h = app.handleDrag; app.handleDrag = null;
    finishHandle(h, x, y);
  } else if (app.drag) {
    if (app.box) {
      selectMany(boxSelect(view, app.store, app.box.x0, app.box.y0, app.box.x1, app.box.y1), e.shiftKey || app.drag.shift);
      app.box = null;
    } else if (!app.drag.moved && app.tool === 'select') {
      select(hitTest(view, app.store, x, y, 8 * app.dpr), e.shiftKey);
    } else if (!app.drag.moved && app.drag.pan && e.button === 0) {
      setPlayCursor(view.t(x));
    }
    app.drag = null;
  }
});

function timeOrdered(stroke) {
  // Sort by time and drop repeated times: the backend wants a time-ordered trace.
  const pts = stroke.slice().sort((a, b) => a[0] - b[0]).filter((p, i, arr) => i === 0 || p[0] > arr[i - 1][0]);
  return pts.map(([t, f]) => [Math.min(Math.max(t, 0), app.file.duration), f]);
}

function sendStroke(method, body, trace) {
  return guarded(async () => {
    const r = await call(method, body);
    // The answer may have come before this reply: then there is nothing to wait for.
    if (!app.answered.has(r.request_id)) app.pending.push({ id: r.request_id, trace });
    invalidatePartials();
  }).then(invalidatePartials);
}

function finishStroke(stroke) {
  const trace = timeOrdered(stroke);
  if (trace.length < 2) { showError('draw along the time axis: a stroke needs at least two points at different times'); invalidatePartials(); return; }
  sendStroke('snap', { trace }, trace);
}

function finishErase(stroke) {
  invalidatePartials();
  const trace = stroke.map(([t, f]) => [t, f]);
  const r = ERASER_PX * app.dpr;
  const radius_t = r / view.w * (view.t1 - view.t0);
  const radius_octaves = r / (view.h - 1) * Math.log2(view.fmax / view.fmin);
  guarded(() => call('erase', { trace, radius_t, radius_octaves }));
}

// An end handle dropped inside the partial's span crops it; beyond its end, extends it along the
// straight line from that end (snapped by the backend like a pencil stroke).
function finishHandle(h, x, y) {
  invalidatePartials();
  const p = app.store.get(h.id);
  if (!p || Math.hypot(x - h.x, y - h.y) < 3 * app.dpr) return;
  const t = Math.min(Math.max(view.t(x), 0), app.file.duration), f = view.f(y);
  const inside = h.end === 'end' ? t < p.t1 : t > p.t0;
  if (inside) {
    // The other end is left a second of room: the page's copy of a loaded partial is float32.
    const [t0, t1] = h.end === 'end' ? [p.t0 - 1, t] : [t, p.t1 + 1];
    guarded(() => call('crop_partial', { id: h.id, t0, t1 }));
    return;
  }
  const from = h.end === 'end' ? [p.t1, p.f[p.n - 1]] : [p.t0, p.f[0]];
  const steps = Math.max(2, Math.ceil(Math.abs(x - h.x) / (4 * app.dpr)));
  const trace = [];
  for (let i = 0; i <= steps; i++) {
    const u = i / steps;
    trace.push([from[0] + u * (t - from[0]), Math.exp(Math.log(from[1]) + u * (Math.log(f) - Math.log(from[1])))]);
  }
  if (h.end === 'start') trace.reverse();
  sendStroke('extend_partial', { id: h.id, trace }, trace);
}

// ---------------------------------------------------------------------------------- tools
function setTool(tool) {
  app.tool = tool;
  for (const b of document.querySelectorAll('[data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
  canvas.style.cursor = tool === 'pan' ? 'grab' : tool === 'select' ? 'default' : 'crosshair';
  invalidatePartials();
}
for (const b of document.querySelectorAll('[data-tool]')) b.addEventListener('click', () => setTool(b.dataset.tool));
setTool('pan');

$('undo').addEventListener('click', () => guarded(() => call('undo')));
$('redo').addEventListener('click', () => guarded(() => call('redo')));
$('delete').addEventListener('click', deleteSelected);
$('hud-delete').addEventListener('click', deleteSelected);
$('hud-merge').addEventListener('click', mergeSelected);
$('hud-mute').addEventListener('click', muteSelected);
$('zoom-fit').addEventListener('click', () => { view.fit(); invalidate(); scheduleView(); });
$('settings-toggle').addEventListener('click', () => { $('settings').hidden = !$('settings').hidden; });
$('settings-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const values = {};
  for (const input of e.target.querySelectorAll('input')) {
    const v = input.name === 'bins_per_octave' ? parseInt(input.value, 10) : parseFloat(input.value);
    if (app.doc && v !== app.doc.settings[input.name]) values[input.name] = v;
  }
  guarded(async () => { await call('set_settings', values); $('error').hidden = true; requestView(true); });
});

document.addEventListener('keydown', (e) => {
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === 's') { e.preventDefault(); if (e.shiftKey) saveAs(); else save(); return; }
  if (e.target instanceof HTMLInputElement) return;
  if ((e.ctrlKey || e.metaKey) && k === 'z') {
    e.preventDefault();
    if (!$(e.shiftKey ? 'redo' : 'undo').disabled) guarded(() => call(e.shiftKey ? 'redo' : 'undo'));
  } else if ((e.ctrlKey || e.metaKey) && k === 'y') { e.preventDefault(); if (!$('redo').disabled) guarded(() => call('redo')); }
  else if (k === 'delete' || k === 'backspace') deleteSelected();
  else if (k === 'm') mergeSelected();
  else if (k === 'p') setTool('pencil');
  else if (k === 'e') setTool('eraser');
  else if (k === 'v') setTool('select');
  else if (k === 'h') setTool('pan');
  else if (k === '0') $('zoom-fit').click();
  else if (k === 'escape') select(null, false);
  else if (e.key === ' ' && app.file) { e.preventDefault(); player.toggle(); }
});

// ------------------------------------------------------------------------- files / dialogs
function promptPath(label, value) {
  const dlg = $('path-dialog');
  dlg.querySelector('.prompt').textContent = label;
  $('path-input').value = value || '';
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok' && $('path-input').value.trim() ? $('path-input').value.trim() : null), { once: true });
  });
}

async function askPath(kind, label, value) {
  if (windowMode) return (await call('dialog', { kind })).path;
  return promptPath(label, value);
}

function defaultProjectPath() {
  if (app.doc && app.doc.project_path) return app.doc.project_path;
  const src = app.doc && app.doc.source.path;
  if (!src) return '';
  // Audio in the app's temporary folder (uploaded, dropped, demo): suggest the home folder.
  const base = src.replace(/\.[^./]+$/, '') + '.soma';
  return src.includes('/soma_shm_app_') ? `~/${base.split('/').pop()}` : base;
}

$('open').addEventListener('click', () => guarded(async () => {
  if (windowMode) { const p = (await call('dialog', { kind: 'open_audio' })).path; if (p) await call('open_file', { path: p }); }
  else $('file-input').click();
}));
$('file-input').addEventListener('change', (e) => {
  const f = e.target.files[0]; e.target.value = '';
  if (f) guarded(() => upload(f));
});
$('demo').addEventListener('click', () => guarded(() => call('open_demo', {})));
// ------------------------------------------------------------------------------ projects
function showDirty() {
  const dirty = !!(app.history && app.history.dirty);
  $('unsaved').hidden = !dirty;
  const name = app.doc && app.doc.project_path ? app.doc.project_path.split('/').pop() : (app.file ? app.file.name : '');
  document.title = `${dirty ? '● ' : ''}soma_shm${name ? ` — ${name}` : ''}`;
}

function askConfirm(message, ok = 'OK', cancel = 'Cancel') {
  const dlg = $('confirm-dialog');
  $('confirm-message').textContent = message;
  $('confirm-ok').textContent = ok; $('confirm-cancel').textContent = cancel;
  dlg.returnValue = '';
  dlg.showModal();
  return new Promise((resolve) => dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true }));
}

// Write with consent: the backend answers "exists" instead of replacing a file; the user decides.
async function writeWithConsent(method, body) {
  let r = await call(method, { ...body, overwrite: false });
  if (r.status === 'exists') {
    if (!await askConfirm(`${r.path} already exists.\nReplace it?`, 'Replace')) return null;
    r = await call(method, { ...body, path: r.path, overwrite: true });
  }
  return r;
}

function saved(r) {
  if (!r) return;
  if (app.doc) app.doc.project_path = r.path;
  showDirty();
  $('status-timings').textContent = `saved ${r.path}${r.copied_audio ? ` (audio copied to ${r.copied_audio})` : ''}`;
  refreshRecent();
}

function save() {
  if (!app.doc) return undefined;
  if (!app.doc.project_path) return saveAs();
  return guarded(async () => saved(await call('save_project', { path: app.doc.project_path, overwrite: true })));
}

function saveAs() {
  if (!app.doc) return undefined;
  return guarded(async () => {
    const p = await askPath('save_project', 'Save project as (.soma)', defaultProjectPath());
    if (p) saved(await writeWithConsent('save_project', { path: p }));
  });
}

async function openProject(path) {
  if (app.history && app.history.dirty
      && !await askConfirm('The current project has unsaved changes.\nOpen another one and lose them?', 'Open anyway')) return;
  try {
    await call('load_project', { path });
  } catch (e) {
    if (e.type !== 'ProjectAudioMissing') throw e;
    const folder = await promptPath(`${e.message}\nFolder:`, '');
    if (folder) await call('load_project', { path, search_dir: folder });
  }
  refreshRecent();
}

async function refreshRecent() {
  const r = await call('recent_projects');
  const sel = $('recent');
  sel.replaceChildren(new Option('Recent…', ''));
  for (const p of r.projects) {
    const o = new Option(p.name, p.path);
    o.title = p.path; o.disabled = !p.exists;
    sel.append(o);
  }
}

async function offerRecovery() {
  const { offers } = await call('recovery_offers');
  for (const o of offers) {
    const what = o.project_path ? o.project_path.split('/').pop() : 'an unsaved project';
    const yes = await askConfirm(`Unsaved work on ${what} (${o.partials} partials, ${o.written_at || 'earlier'}) was kept when the app last ended.\nRestore it?`, 'Restore', 'Discard');
    if (yes) { await call('restore_recovery', { path: o.path }); return; }
    await call('discard_recovery', { path: o.path });
  }
}

$('save').addEventListener('click', () => save());
$('save-as').addEventListener('click', () => saveAs());
$('load').addEventListener('click', () => guarded(async () => {
  const p = await askPath('open_project', 'Load project (.soma)', defaultProjectPath());
  if (p) await openProject(p);
}));
// The Export dialog: SOMA's outputs (MIDI, sine and CV audio) and the points (CSV, JSON).
const EXPORT_SUFFIX = { mpe: '.mid', midi: '.mid', mono: '.mid', audio: '.wav', cv: '.wav', csv: '.csv', json: '.json' };

function exportSync(form, changedFormat) {
  const f = form.format.value;
  for (const fs of form.querySelectorAll('fieldset')) fs.hidden = !fs.dataset.for.split(' ').includes(f);
  if (changedFormat) {
    const p = form.path.value;
    const keepFlac = (f === 'audio' || f === 'cv') && /\.flac$/i.test(p);
    if (p && !keepFlac) form.path.value = p.replace(/(\.[^./]*)?$/, EXPORT_SUFFIX[f]);
    if (!form.pitch_bend_range.dataset.edited) form.pitch_bend_range.value = f === 'mpe' ? 48 : 12;
  }
}

function exportBody(form) {
  const f = form.format.value;
  const body = { path: form.path.value.trim(), include_muted: form.include_muted.checked };
  if (f === 'csv' || f === 'json') return ['export', body];
  body.format = f;
  if (f === 'mpe' || f === 'midi' || f === 'mono') {
    Object.assign(body, { pitch_bend_range: parseInt(form.pitch_bend_range.value, 10), amplitude: form.amplitude.value,
      curve: form.curve.value, cc_rate: parseFloat(form.cc_rate.value) });
  } else {
    if (form.sample_rate.value) body.sample_rate = parseInt(form.sample_rate.value, 10);
    body.bit_depth = parseInt(form.bit_depth.value, 10);
    if (f === 'audio') Object.assign(body, { speed: parseFloat(form.speed.value), normalize: form.normalize.checked });
    else Object.assign(body, { mode: form.mode.value, curve: form.cv_curve.value });
  }
  return ['export_as', body];
}

async function runExport(form) {
  const [method, body] = exportBody(form);
  if (!body.path) throw new Error('type the file to write');
  let r = await call(method, body);
  if (r.status === 'exists') {
    if (!window.confirm(`${r.path} exists. Replace it?`)) return;
    r = await call(method, { ...body, overwrite: true });
  }
  const paths = r.paths || [r.path];
  $('status-timings').textContent = `exported ${r.partials} partials to ${paths.join(', ')}`;
  $('export-dialog').dataset.written = JSON.stringify(paths);
}

{
  const dlg = $('export-dialog'), form = dlg.querySelector('form');
  form.format.addEventListener('change', () => exportSync(form, true));
  form.pitch_bend_range.addEventListener('input', () => { form.pitch_bend_range.dataset.edited = '1'; });
  $('export-browse').hidden = !windowMode;
  $('export-browse').addEventListener('click', () => guarded(async () => {
    const p = (await call('dialog', { kind: 'export' })).path;
    if (p) { form.path.value = p; }
  }));
  dlg.addEventListener('close', () => { if (dlg.returnValue === 'ok') guarded(() => runExport(form)); });
  $('export').addEventListener('click', () => {
    if (!form.path.value) {
      const base = defaultProjectPath().replace(/\.soma$/, '');
      form.path.value = base ? base + EXPORT_SUFFIX[form.format.value] : '';
    }
    exportSync(form, false);
    dlg.returnValue = '';
    dlg.showModal();
  });
}
$('recent').addEventListener('change', (e) => {
  const p = e.target.value; e.target.value = '';
  if (p) guarded(() => openProject(p));
});
// Leaving or reloading the page with unsaved changes asks first (the backend keeps a recovery
// file either way).
window.addEventListener('beforeunload', (e) => {
  if (app.history && app.history.dirty) { e.preventDefault(); e.returnValue = ''; }
});

const stage = $('stage');
stage.addEventListener('dragover', (e) => { e.preventDefault(); stage.classList.add('drag'); });
stage.addEventListener('dragleave', () => stage.classList.remove('drag'));
stage.addEventListener('drop', (e) => {
  e.preventDefault(); stage.classList.remove('drag');
  const f = e.dataTransfer.files[0];
  if (!f) return;
  if (f.name.toLowerCase().endsWith('.soma')) { showError('drop audio files here; open projects with Load…'); return; }
  guarded(() => upload(f));
});

// ---------------------------------------------------------------------------------- start
// Everything the page shows, from the backend's state (at start, and after the event stream
// reconnected: what happened meanwhile was not pushed).
async function sync() {
  const st = await call('state');
  renderStatus(st.status);
  if (st.loading) { app.opening = true; $('loading').hidden = false; $('empty').hidden = true; }
  if (st.kernels) onEvent({ type: 'progress', stage: 'kernels', ...st.kernels });
  if (st.last_error) onEvent({ type: 'error', ...st.last_error });
  if (st.file && st.overview) onEvent({ type: 'opened', file: st.file, overview: st.overview, document: st.document });
  else if (st.document) await setDocument(st.document);
  return st;
}

const streamOpen = subscribe(onEvent, () => guarded(sync));
guarded(async () => {
  await streamOpen; // from here every event reaches the page, so the state below misses none
  const st = await sync();
  await refreshRecent();
  if (st.recovery_offers) await offerRecovery();
});
resize();
