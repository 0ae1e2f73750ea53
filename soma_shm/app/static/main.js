// The page: layers (overview, viewport, partials), rulers, tools, panels. Everything the page
// shows comes from the backend; edits go to the backend, which keeps the document and history.
import { call, upload, loadImage, subscribe, windowMode } from './api.js';
import { View, timeTicks, freqTicks } from './view.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const canvas = $('canvas');
const ctx = canvas.getContext('2d');
const view = new View();
const metrics = { viewports: [], overviewDrawnAt: null, lastInputAt: 0, requests: 0, longestDrawMs: 0 };
window.somaMetrics = metrics;

const app = {
  file: null, overview: null, viewport: null, partials: [], selected: new Set(), tool: 'pan',
  doc: null, stroke: null, pending: [], requestedKey: null, latestRequest: 0, shownRequest: 0,
  dpr: 1, drag: null, dirty: true, viewFrame: null, cursor: null, cursorFrame: null,
  sent: new Map(), // request id -> { key, sentAt, answeredAt } of view requests not yet shown
};

// ------------------------------------------------------------------------------ errors / status
function showError(message) {
  const box = $('error');
  box.querySelector('.msg').textContent = message;
  box.hidden = false;
  $('status').dataset.state = 'error';
}
$('error').querySelector('.close').addEventListener('click', () => { $('error').hidden = true; });

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
    canvas.width = w; canvas.height = h; view.w = w; view.h = h;
    for (const r of [$('freq-ruler'), $('time-ruler')]) {
      r.width = Math.round(r.clientWidth * app.dpr); r.height = Math.round(r.clientHeight * app.dpr);
    }
    invalidate(); scheduleView();
  }
}
new ResizeObserver(resize).observe($('stage'));

function invalidate() {
  if (app.dirty && app.frame) return;
  app.dirty = true;
  if (!app.frame) app.frame = requestAnimationFrame(draw);
}

function drawLayer(layer) {
  if (!layer) return;
  ctx.setTransform(...view.imageTransform(layer.geom));
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(layer.canvas, 0, 0);
  ctx.setTransform(1, 0, 0, 1, 0, 0);
}

function polyline(points, close = false) {
  ctx.beginPath();
  points.forEach(([t, f], i) => { const x = view.x(t), y = view.y(f); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
  if (close) ctx.closePath();
}

function draw() {
  const started = performance.now();
  paint();
  metrics.longestDrawMs = Math.max(metrics.longestDrawMs || 0, performance.now() - started);
}

function paint() {
  app.frame = null; app.dirty = false;
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
  if (app.viewport && canvas.dataset.viewportRequest !== String(app.viewport.geom.request_id)) {
    canvas.dataset.viewportRequest = String(app.viewport.geom.request_id);
    canvas.dataset.viewportMethod = app.viewport.geom.method;
    metrics.viewports.push({ id: app.viewport.geom.request_id, at: performance.now(), method: app.viewport.geom.method,
      key: app.viewport.key, timings: app.viewport.geom.timings, window_s: app.viewport.geom.t1 - app.viewport.geom.t0,
      page: app.viewport.page });
  }
  const lw = 2 * app.dpr;
  for (const p of app.partials) {
    const sel = app.selected.has(p.id);
    if (sel) { ctx.strokeStyle = '#fff'; ctx.lineWidth = lw + 3 * app.dpr; polyline(p.points); ctx.stroke(); }
    ctx.strokeStyle = p.color; ctx.lineWidth = lw; ctx.globalAlpha = p.is_muted ? 0.4 : 1;
    ctx.setLineDash(p.is_muted ? [4 * app.dpr, 4 * app.dpr] : []);
    polyline(p.points); ctx.stroke();
    ctx.globalAlpha = 1; ctx.setLineDash([]);
  }
  ctx.strokeStyle = 'rgba(255,255,255,0.8)'; ctx.lineWidth = 1.5 * app.dpr; ctx.setLineDash([5 * app.dpr, 4 * app.dpr]);
  for (const s of app.pending) { polyline(s.trace); ctx.stroke(); }
  ctx.setLineDash([]);
  if (app.stroke && app.stroke.length > 1) { ctx.strokeStyle = '#fff'; polyline(app.stroke); ctx.stroke(); }
  drawRulers();
}

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
  invalidate();
}

async function onOverview(ov) {
  const img = await loadImage(ov.blob);
  if (app.overview) app.overview.canvas.close();
  app.overview = { geom: { ...ov, width: img.width, height: img.height }, canvas: img.bitmap };
  invalidate();
}

// ------------------------------------------------------------------------------- document
function setDocument(doc) {
  app.doc = doc;
  app.partials = doc.partials;
  const ids = new Set(doc.partials.map((p) => p.id));
  for (const id of [...app.selected]) if (!ids.has(id)) app.selected.delete(id);
  $('undo').disabled = !doc.can_undo; $('undo').title = doc.undo_label ? `Undo ${doc.undo_label} (Ctrl+Z)` : 'Undo (Ctrl+Z)';
  $('redo').disabled = !doc.can_redo; $('redo').title = doc.redo_label ? `Redo ${doc.redo_label} (Ctrl+Shift+Z)` : 'Redo (Ctrl+Shift+Z)';
  const form = $('settings-form');
  for (const input of form.querySelectorAll('input')) {
    if (document.activeElement !== input) input.value = doc.settings[input.name];
  }
  renderList();
  invalidate();
}

function renderList() {
  const ul = $('partial-list');
  ul.replaceChildren();
  for (const p of app.partials) {
    const li = document.createElement('li');
    li.dataset.testid = 'partial-item'; li.dataset.id = p.id;
    li.classList.toggle('selected', app.selected.has(p.id)); li.classList.toggle('muted', p.is_muted);
    const sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = p.color;
    const pts = p.points;
    const fmean = Math.exp(pts.reduce((a, q) => a + Math.log(q[1]), 0) / pts.length);
    const label = document.createElement('span');
    label.textContent = `${p.id} · ${fmean.toFixed(1)} Hz · ${pts[0][0].toFixed(2)}–${pts[pts.length - 1][0].toFixed(2)} s`;
    const mute = document.createElement('button'); mute.textContent = p.is_muted ? 'unmute' : 'mute';
    mute.dataset.testid = 'partial-mute';
    mute.addEventListener('click', (e) => { e.stopPropagation(); guarded(() => call('update_partial', { id: p.id, is_muted: !p.is_muted })); });
    li.append(sw, label, mute);
    li.addEventListener('click', (e) => select(p.id, e.shiftKey));
    ul.append(li);
  }
  $('partial-count').textContent = String(app.partials.length);
  $('delete').disabled = app.selected.size === 0;
}

function select(id, add) {
  if (!add) app.selected.clear();
  if (id !== null) { if (add && app.selected.has(id)) app.selected.delete(id); else app.selected.add(id); }
  renderList(); invalidate();
}

function deleteSelected() {
  if (!app.selected.size) return;
  const ids = [...app.selected];
  guarded(async () => { await call('delete_partials', { ids }); app.selected.clear(); renderList(); });
}

// --------------------------------------------------------------------------------- events
function onEvent(ev) {
  switch (ev.type) {
    case 'progress': {
      $('loading').hidden = false; $('empty').hidden = true;
      $('status').dataset.state = 'loading';
      const overall = ev.stage === 'decode' ? 0.5 * ev.fraction : 0.5 + 0.5 * ev.fraction;
      $('progress').value = overall;
      $('loading').querySelector('.stage-name').textContent = ev.stage === 'decode' ? 'Decoding audio…' : 'Computing overview…';
      $('loading').querySelector('.detail').textContent = `${ev.stage} ${(100 * ev.fraction).toFixed(0)} %`;
      break;
    }
    case 'opened': {
      $('loading').hidden = true; $('empty').hidden = true; $('error').hidden = true;
      metrics.opens = (metrics.opens || 0) + 1;
      app.file = ev.file; app.viewport = null; app.overview = null; app.shownRequest = 0; app.requestedKey = null; app.pending = [];
      app.sent.clear();
      delete canvas.dataset.viewportMethod; delete canvas.dataset.viewportRequest;
      canvas.dataset.overview = 'loading';
      $('status').dataset.state = 'ready';
      $('status-file').textContent = `${ev.file.name} · ${ev.file.duration.toFixed(2)} s · ${ev.file.sample_rate} Hz`;
      document.title = `soma_shm — ${ev.file.name}`;
      view.setLimits({ t0: 0, t1: ev.file.duration, fmin: ev.file.fmin, fmax: ev.file.fmax });
      setDocument(ev.document);
      onOverview(ev.overview).then(() => requestView(true));
      break;
    }
    case 'overview': onOverview(ev.overview).then(() => requestView(true)); break;
    case 'viewport': onViewport(ev); break;
    case 'document': setDocument(ev.document); break;
    case 'snapped': app.pending = app.pending.filter((s) => s.id !== ev.request_id); invalidate(); break;
    case 'status': renderStatus(ev.status); break;
    case 'error': {
      if (ev.op === 'open') { $('loading').hidden = true; if (!app.file) $('empty').hidden = false; }
      if (ev.op === 'snap') { app.pending = app.pending.filter((s) => s.id !== ev.request_id); invalidate(); }
      showError(`${ev.op} failed — ${ev.error.type}: ${ev.error.message}`);
      break;
    }
    default: break;
  }
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

canvas.addEventListener('pointerdown', (e) => {
  if (!app.file || e.button > 1) return;
  canvas.setPointerCapture(e.pointerId);
  const [x, y] = canvasPoint(e);
  if (app.tool === 'pencil' && e.button === 0) {
    app.stroke = [[view.t(x), view.f(y)]];
  } else {
    app.drag = { x, y, moved: false, pan: app.tool === 'pan' || e.button === 1 };
  }
});

canvas.addEventListener('pointermove', (e) => {
  const [x, y] = canvasPoint(e);
  if (app.file) { // the readout is written once per frame, not once per event
    app.cursor = [x, y];
    if (!app.cursorFrame) app.cursorFrame = requestAnimationFrame(writeCursor);
  }
  if (app.stroke) { app.stroke.push([view.t(x), view.f(y)]); invalidate(); return; }
  if (app.drag) {
    const dx = x - app.drag.x, dy = y - app.drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) app.drag.moved = true;
    if (app.drag.pan && app.drag.moved) {
      metrics.lastInputAt = performance.now();
      view.pan(dx, dy); app.drag.x = x; app.drag.y = y; invalidate(); scheduleView();
    }
  }
});

canvas.addEventListener('pointerup', (e) => {
  const [x, y] = canvasPoint(e);
  if (app.stroke) {
    const stroke = app.stroke; app.stroke = null;
    finishStroke(stroke);
  } else if (app.drag) {
    if (!app.drag.moved && app.tool === 'select') select(hitTest(x, y), e.shiftKey);
    app.drag = null;
  }
});

function finishStroke(stroke) {
  // Sort by time and drop repeated times: the backend wants a time-ordered trace.
  const pts = stroke.slice().sort((a, b) => a[0] - b[0]).filter((p, i, arr) => i === 0 || p[0] > arr[i - 1][0]);
  if (pts.length < 2) { showError('draw along the time axis: a stroke needs at least two points at different times'); invalidate(); return; }
  const trace = pts.map(([t, f]) => [Math.min(Math.max(t, 0), app.file.duration), f]);
  guarded(async () => {
    const r = await call('snap', { trace });
    app.pending.push({ id: r.request_id, trace });
    invalidate();
  }).then(invalidate);
}

function hitTest(x, y) {
  let best = null, bestD = 8 * app.dpr;
  for (const p of app.partials) {
    const pts = p.points;
    for (let i = 1; i < pts.length; i++) {
      const x0 = view.x(pts[i - 1][0]), y0 = view.y(pts[i - 1][1]), x1 = view.x(pts[i][0]), y1 = view.y(pts[i][1]);
      const dx = x1 - x0, dy = y1 - y0, L = dx * dx + dy * dy;
      const u = L ? Math.max(0, Math.min(1, ((x - x0) * dx + (y - y0) * dy) / L)) : 0;
      const d = Math.hypot(x - (x0 + u * dx), y - (y0 + u * dy));
      if (d < bestD) { bestD = d; best = p.id; }
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------- tools
function setTool(tool) {
  app.tool = tool;
  for (const b of document.querySelectorAll('[data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
  canvas.style.cursor = tool === 'pan' ? 'grab' : tool === 'pencil' ? 'crosshair' : 'default';
}
for (const b of document.querySelectorAll('[data-tool]')) b.addEventListener('click', () => setTool(b.dataset.tool));
setTool('pan');

$('undo').addEventListener('click', () => guarded(() => call('undo')));
$('redo').addEventListener('click', () => guarded(() => call('redo')));
$('delete').addEventListener('click', deleteSelected);
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
  if (e.target instanceof HTMLInputElement) return;
  const k = e.key.toLowerCase();
  if ((e.ctrlKey || e.metaKey) && k === 'z') { e.preventDefault(); guarded(() => call(e.shiftKey ? 'redo' : 'undo')); }
  else if ((e.ctrlKey || e.metaKey) && k === 'y') { e.preventDefault(); guarded(() => call('redo')); }
  else if (k === 'delete' || k === 'backspace') deleteSelected();
  else if (k === 'p') setTool('pencil');
  else if (k === 'v') setTool('select');
  else if (k === 'h') setTool('pan');
  else if (k === '0') $('zoom-fit').click();
  else if (k === 'escape') select(null, false);
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
  return src ? src.replace(/\.[^./]+$/, '') + '.soma' : '';
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
$('save').addEventListener('click', () => guarded(async () => {
  const p = await askPath('save_project', 'Save project as (.soma)', defaultProjectPath());
  if (p) await call('save_project', { path: p });
}));
$('load').addEventListener('click', () => guarded(async () => {
  const p = await askPath('open_project', 'Load project (.soma)', defaultProjectPath());
  if (p) await call('load_project', { path: p });
}));
$('export').addEventListener('click', () => guarded(async () => {
  const base = defaultProjectPath().replace(/\.soma$/, '');
  const p = await askPath('export', 'Export partials to (.csv or .json)', base ? `${base}_partials.csv` : '');
  if (p) { const r = await call('export', { path: p }); $('status-timings').textContent = `exported ${r.partials} partials to ${r.path}`; }
}));

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
subscribe(onEvent);
guarded(async () => {
  const st = await call('state');
  renderStatus(st.status);
  if (st.loading) { $('loading').hidden = false; $('empty').hidden = true; }
  if (st.last_error) onEvent({ type: 'error', ...st.last_error });
  if (st.file && st.overview) onEvent({ type: 'opened', file: st.file, overview: st.overview, document: st.document });
  else if (st.document) setDocument(st.document);
});
resize();
