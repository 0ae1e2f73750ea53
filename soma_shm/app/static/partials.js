// Partials on the page: the store kept in step with the backend by edit events, the partials
// canvas layer (culled by time; partials with several points per pixel column drawn as their
// lowest-to-highest span per column straight into pixels, the others stroked one path per colour
// with one vertex per pixel; while panning, a copy of a cache drawn with a margin in idle time), the
// virtualised list, hit tests, box select and the selection HUD. The backend keeps the document
// and its history; this module only mirrors it for drawing.

// ------------------------------------------------------------------------------------ store
// One partial: {id, color, is_muted, n, t: Float64Array, f: Float64Array, a: Float32Array,
// t0, t1, fmin, fmax, fmean}. `sorted` holds them by start time (then id): the list order and
// the time index used to cull drawing.
// lf: natural log of f, kept so that drawing needs no logarithm per point.
function makePartial(id, color, isMuted, t, f, a) {
  let fmin = Infinity, fmax = 0, lsum = 0;
  const lf = new Float32Array(f.length);
  for (let i = 0; i < f.length; i++) {
    const v = f[i]; if (v < fmin) fmin = v; if (v > fmax) fmax = v;
    lf[i] = Math.log(v); lsum += lf[i];
  }
  return withStats(id, color, isMuted, t, f, a, lf, fmin, fmax, lsum);
}

function withStats(id, color, isMuted, t, f, a, lf, fmin, fmax, lsum) {
  const n = t.length;
  return { id, color, is_muted: isMuted, n, t, f, a, lf, t0: t[0], t1: t[n - 1], fmin, fmax,
           dt: n > 1 ? (t[n - 1] - t[0]) / (n - 1) : 0, fmean: Math.exp(lsum / Math.max(1, n)) };
}

function fromDict(p) {
  const n = p.points.length, t = new Float64Array(n), f = new Float64Array(n), a = new Float32Array(n);
  for (let i = 0; i < n; i++) { const q = p.points[i]; t[i] = q[0]; f[i] = q[1]; a[i] = q[2]; }
  return makePartial(p.id, p.color, p.is_muted, t, f, a);
}

const before = (p, q) => p.t0 < q.t0 || (p.t0 === q.t0 && p.id < q.id);

export class PartialStore {
  constructor() { this.byId = new Map(); this.sorted = []; this.maxSpan = 0; this.version = 0; }

  get size() { return this.byId.size; }
  get(id) { return this.byId.get(id); }

  // A whole document: the partials' metadata plus one float32 block of all their points.
  // One pass over the block: each partial's arrays (views of four arrays of all the points, so
  // no allocation per partial) and its statistics together.
  setSnapshot(meta, block) {
    this.byId.clear();
    const total = block.length / 3;
    const T = new Float64Array(total), F = new Float64Array(total), A = new Float32Array(total), LF = new Float32Array(total);
    let k = 0, j = 0;
    for (const m of meta) {
      const n = m.n, start = j;
      let fmin = Infinity, fmax = 0, lsum = 0;
      for (let i = 0; i < n; i++, j++, k += 3) {
        const v = block[k + 1];
        T[j] = block[k]; F[j] = v; A[j] = block[k + 2];
        if (v < fmin) fmin = v;
        if (v > fmax) fmax = v;
        LF[j] = Math.log(v); lsum += LF[j];
      }
      this.byId.set(m.id, withStats(m.id, m.color, m.is_muted, T.subarray(start, j), F.subarray(start, j),
                                    A.subarray(start, j), LF.subarray(start, j), fmin, fmax, lsum));
    }
    this.sorted = [...this.byId.values()].sort((p, q) => (before(p, q) ? -1 : before(q, p) ? 1 : 0));
    this.maxSpan = this.sorted.reduce((s, p) => Math.max(s, p.t1 - p.t0), 0);
    this.version++;
  }

  _index(p) { // position of p (or where it goes) in `sorted`
    let lo = 0, hi = this.sorted.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (before(this.sorted[mid], p)) lo = mid + 1; else hi = mid; }
    return lo;
  }
  _remove(id) {
    const p = this.byId.get(id);
    if (!p) return;
    const i = this._index(p);
    if (this.sorted[i] === p) this.sorted.splice(i, 1);
    else this.sorted = this.sorted.filter((q) => q !== p);
    this.byId.delete(id);
  }
  _insert(p) {
    this.byId.set(p.id, p);
    this.sorted.splice(this._index(p), 0, p);
    this.maxSpan = Math.max(this.maxSpan, p.t1 - p.t0);
  }

  // One edit event: O(partials it touched) plus an array splice each.
  applyEdit(ev) {
    for (const id of ev.removed) this._remove(id);
    for (const d of ev.changed) { this._remove(d.id); this._insert(fromDict(d)); }
    for (const d of ev.added) this._insert(fromDict(d));
    this.version++;
  }

  // Partials whose time span meets [t0, t1] (and, if given, whose frequencies meet [fmin, fmax]).
  inRange(t0, t1, fmin = 0, fmax = Infinity) {
    const out = [], s = this.sorted;
    let lo = 0, hi = s.length; // first partial starting at or after t0 - maxSpan
    const from = t0 - this.maxSpan;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (s[mid].t0 < from) lo = mid + 1; else hi = mid; }
    for (let i = lo; i < s.length && s[i].t0 <= t1; i++) {
      const p = s[i];
      if (p.t1 >= t0 && p.fmax >= fmin && p.fmin <= fmax) out.push(p);
    }
    return out;
  }
}

// --------------------------------------------------------------------------------- drawing
function firstAtOrAfter(t, v) { let lo = 0, hi = t.length; while (lo < hi) { const m = (lo + hi) >> 1; if (t[m] < v) lo = m + 1; else hi = m; } return lo; }

// Adds partial p's visible stretch to the current path, one vertex per device pixel at most: where
// several points share a pixel column only every k-th is looked at (k points per pixel).
function tracePath(ctx, g, p) {
  const t = p.t, lf = p.lf, n = p.n;
  const full = p.t0 >= g.t0 && p.t1 <= g.t1;
  const i0 = full ? 0 : Math.max(0, firstAtOrAfter(t, g.t0) - 1);
  const i1 = full ? n - 1 : Math.min(n - 1, firstAtOrAfter(t, g.t1));
  let lx = (t[i0] - g.t0) * g.kx, ly = (g.lfmax - lf[i0]) * g.ky + 0.5;
  ctx.moveTo(lx, ly);
  if (i0 === i1) { ctx.lineTo(lx + 0.5, ly); return 1; }
  const stride = p.dt > 0 ? Math.max(1, Math.floor(1 / (p.dt * g.kx))) : 1;
  let drawn = 1;
  for (let i = i0 + stride; ; i += stride) {
    if (i > i1) i = i1;
    const x = (t[i] - g.t0) * g.kx, y = (g.lfmax - lf[i]) * g.ky + 0.5;
    if (i === i1 || Math.abs(x - lx) >= 1 || Math.abs(y - ly) >= 1) { ctx.lineTo(x, y); lx = x; ly = y; drawn++; }
    if (i === i1) break;
  }
  return drawn;
}

function geometry(view) {
  return { t0: view.t0, t1: view.t1, kx: view.w / (view.t1 - view.t0), ky: (view.h - 1) / Math.log(view.fmax / view.fmin),
           lfmax: Math.log(view.fmax) };
}

// ------------------------------------------------------------------ level of detail
// A partial with more than one point per device-pixel column (a wide window) is drawn decimated:
// in each column it crosses, the span from the lowest to the highest point of its polyline there
// (segments crossing a column boundary included), thickened by the line width and written
// straight into a pixel buffer that is put on the canvas once. That shows every partial's whole
// extent at a cost of a few operations per point and per column, where stroking thousands of
// short paths makes the canvas rasterise tens of thousands of stroked edges every frame.
// Partials with fewer points than columns (zoomed in) are stroked as antialiased paths.
const opaque = new Map(), faint = new Map(); // CSS colour -> pixel value, at opacity 1 and 0.4
let colourCtx = null;
// The pixel value (RGBA bytes as a little-endian uint32) of CSS colour `css`, faint or not.
function pixelOf(css, isFaint) {
  const cache = isFaint ? faint : opaque;
  let v = cache.get(css);
  if (v !== undefined) return v;
  let r = 255, g = 255, b = 255, a = 1, norm = css;
  if (!/^#[0-9a-f]{6}$/i.test(norm)) { // any other CSS colour: the canvas answers #rrggbb or rgba(...)
    colourCtx = colourCtx || new OffscreenCanvas(1, 1).getContext('2d');
    colourCtx.fillStyle = '#ffffff'; colourCtx.fillStyle = css;
    norm = colourCtx.fillStyle;
  }
  const hex = /^#([0-9a-f]{6})$/i.exec(norm), rgba = /rgba?\(([^)]+)\)/.exec(norm);
  if (hex) { const n = parseInt(hex[1], 16); r = n >> 16; g = (n >> 8) & 255; b = n & 255; }
  else if (rgba) { const c = rgba[1].split(',').map(Number); [r, g, b] = c; if (c.length > 3) a = c[3]; }
  v = ((Math.round(255 * a * (isFaint ? 0.4 : 1)) << 24) | (b << 16) | (g << 8) | r) >>> 0;
  cache.set(css, v);
  return v;
}

// The pixel buffer of decimated partials (reused from frame to frame: no allocation per frame).
export class SpanRaster {
  constructor() {
    this.image = null; this.px = null; this.w = 0; this.h = 0;
    this.g = null; this.cols = 0; this.value = 0; this.hy = 0; this.hx = 0; this.dash = 0; // the partial being written
  }

  // Makes the buffer w x h; true when it is new (all zero), false when the old one is kept as it was.
  resize(w, h) {
    if (w === this.w && h === this.h) return false;
    this.image = new ImageData(w, h); this.px = new Uint32Array(this.image.data.buffer); this.w = w; this.h = h;
    return true;
  }

  // Writes partial p's columns in pixel `value`: each column's span grown by `hy` pixels up and
  // down and by `hx` columns each side; `dash` (pixels, 0 for none) leaves out every other run
  // of that many columns. Works in time and log-frequency: a point inside the current column
  // costs a comparison and a min/max; a segment leaving it is cut at the boundary, so the line
  // between two points is in both columns. Returns the columns written.
  partial(p, g, value, hy, hx, dash) {
    const t = p.t, lf = p.lf, n = p.n, gt0 = g.t0, kx = g.kx, cmax = this.w + hx;
    const full = p.t0 >= g.t0 && p.t1 <= g.t1;
    const i0 = full ? 0 : Math.max(0, firstAtOrAfter(t, g.t0) - 1);
    const i1 = full ? n - 1 : Math.min(n - 1, firstAtOrAfter(t, g.t1));
    this.g = g; this.cols = 0; this.value = value; this.hy = hy; this.hx = hx; this.dash = dash;
    let col = Math.floor((t[i0] - gt0) * kx), tb = gt0 + (col + 1) / kx; // tb: where the next column starts
    let tp = t[i0], vp = lf[i0], lo = vp, hi = vp; // the last point; the column's log-frequency range
    for (let i = i0 + 1; i <= i1; i++) {
      const ti = t[i], v = lf[i];
      if (ti < tb) { if (v < lo) lo = v; else if (v > hi) hi = v; tp = ti; vp = v; continue; }
      const s = (v - vp) / (ti - tp);
      const vb = vp + s * (tb - tp); // where the segment leaves the column
      this.flush(col, vb < lo ? vb : lo, vb > hi ? vb : hi);
      const c1 = Math.max(col + 1, Math.floor((ti - gt0) * kx));
      // Columns a long segment passes through without a point (only those in view).
      for (let c = Math.max(col + 1, -hx - 1), e = Math.min(c1 - 1, cmax); c <= e; c++) {
        const va = vp + s * (gt0 + c / kx - tp), vc = vp + s * (gt0 + (c + 1) / kx - tp);
        this.flush(c, va < vc ? va : vc, va < vc ? vc : va);
      }
      col = c1;
      if (col > cmax) break;
      tb = gt0 + (col + 1) / kx;
      const ve = vp + s * (gt0 + col / kx - tp); // where it enters this one
      lo = ve < v ? ve : v; hi = ve < v ? v : ve;
      tp = ti; vp = v;
    }
    this.flush(col, lo, hi);
    return this.cols;
  }

  // Writes column `col` from log-frequency hi down to lo (grown by hy rows and hx columns).
  flush(col, lo, hi) {
    const W = this.w, hx = this.hx, dash = this.dash;
    if (col < -hx || col >= W + hx || (dash && Math.floor(col / dash) % 2 === 1)) return;
    const g = this.g, px = this.px, value = this.value;
    const ya = Math.max(0, Math.round((g.lfmax - hi) * g.ky + 0.5 - this.hy));
    const yb = Math.min(this.h, Math.round((g.lfmax - lo) * g.ky + 0.5 + this.hy));
    const ca = Math.max(0, col - hx), cb = Math.min(W - 1, col + hx);
    for (let c = ca; c <= cb; c++) for (let k = ya * W + c, e = yb * W; k < e; k += W) px[k] = value;
    this.cols++;
  }
}

const layerRaster = new SpanRaster(); // the layer's size (the panning caches have their own)
const ROWS_PER_STEP = 64; // pixel-buffer rows zeroed or put on the canvas per step of a sliced drawing
const PARTIALS_PER_STEP = 16; // decimated partials written per step of a sliced drawing

// The drawing of the partials of one view as a sequence of steps, run at once (drawPartials) or a
// slice at a time (a panning cache, in idle time): the same pixels either way. Selected partials get
// a white halo; muted ones are faint and dashed. Dense partials (more points than pixel columns) are
// decimated into one pixel buffer first (the halos of the selected ones, the others, then the
// selected ones, so no neighbour covers the one the user picked), the buffer is put on the canvas,
// then the other partials are stroked over it, one path per colour and style.
class PartialsDrawing {
  // `clear`: the canvas may hold an earlier drawing (a reused cache canvas) and is cleared first.
  constructor(view, store, selected, dpr, raster, w, h, clear = false) {
    const g = this.g = geometry(view);
    this.visible = store.inRange(view.t0, view.t1, view.fmin, view.fmax);
    this.selected = selected; this.dpr = dpr; this.raster = raster; this.w = w; this.h = h; this.clear = clear;
    this.dense = []; this.chosen = []; this.stroked = []; // decimated (not selected / selected), stroked
    for (const p of this.visible) {
      if (p.n > 1 && p.dt * g.kx < 1) (selected.has(p.id) ? this.chosen : this.dense).push(p);
      else this.stroked.push(p);
    }
    this.decimated = this.dense.length + this.chosen.length;
    this.vertices = 0;
    const lw = 2 * dpr;
    this.hy = lw / 2; this.hx = Math.max(0, Math.round(lw / 2) - 1);
    this.halo = Math.max(1, Math.round(1.5 * dpr)); this.dash = Math.round(4 * dpr);
    // Phases: 0 zero the buffer, 1 halos, 2 unselected dense, 3 selected dense, 4 put, 5 strokes.
    this.phase = this.decimated ? 0 : 5; this.i = 0;
  }

  // Draws on ctx until performance.now() reaches `until` (looked at between steps); true once all
  // is drawn. Without `until`, everything at once.
  run(ctx, until = Infinity) {
    const sliced = until !== Infinity, r = this.raster, g = this.g, W = this.w, H = this.h;
    while (this.phase <= 5) {
      if (sliced && performance.now() >= until) return false;
      const ph = this.phase;
      let finished;
      if (ph === 0) {
        if (this.i === 0 && r.resize(W, H)) finished = true; // a new buffer is zero already
        else {
          const e = sliced ? Math.min(H, this.i + ROWS_PER_STEP) : H;
          r.px.fill(0, this.i * W, e * W);
          this.i = e; finished = e === H;
        }
      } else if (ph <= 3) {
        const list = ph === 2 ? this.dense : this.chosen;
        const e = sliced ? Math.min(list.length, this.i + PARTIALS_PER_STEP) : list.length;
        if (ph === 1) {
          const white = pixelOf('#ffffff', false), hy = this.hy + this.halo, hx = this.hx + this.halo;
          for (let i = this.i; i < e; i++) r.partial(list[i], g, white, hy, hx, 0);
        } else {
          for (let i = this.i; i < e; i++) {
            const p = list[i];
            this.vertices += r.partial(p, g, pixelOf(p.color, p.is_muted), this.hy, this.hx, p.is_muted ? this.dash : 0);
          }
        }
        this.i = e; finished = e === list.length;
      } else if (ph === 4) {
        const e = sliced ? Math.min(H, this.i + ROWS_PER_STEP) : H;
        ctx.putImageData(r.image, 0, 0, 0, this.i, W, e - this.i);
        this.i = e; finished = e === H;
      } else {
        this.stroke(ctx);
        finished = true;
      }
      if (finished) { this.phase++; this.i = 0; }
    }
    return true;
  }

  stroke(ctx) {
    const g = this.g, dpr = this.dpr, lw = 2 * dpr, selected = this.selected, stroked = this.stroked;
    if (this.clear && !this.decimated) ctx.clearRect(0, 0, this.w, this.h);
    const groups = new Map();
    if (selected.size) {
      ctx.beginPath();
      for (const p of stroked) if (selected.has(p.id)) this.vertices += tracePath(ctx, g, p);
      ctx.strokeStyle = '#fff'; ctx.lineWidth = lw + 3 * dpr; ctx.lineJoin = 'round'; ctx.stroke();
    }
    for (const p of stroked) {
      const key = p.is_muted ? `${p.color}|1` : p.color;
      let list = groups.get(key);
      if (!list) { list = []; groups.set(key, list); }
      list.push(p);
    }
    for (const [key, list] of groups) {
      const [color, muted] = key.split('|');  // muted: '1' or undefined
      ctx.beginPath();
      for (const p of list) this.vertices += tracePath(ctx, g, p);
      ctx.strokeStyle = color; ctx.lineWidth = lw; ctx.globalAlpha = muted === '1' ? 0.4 : 1;
      ctx.setLineDash(muted === '1' ? [4 * dpr, 4 * dpr] : []);
      ctx.stroke();
    }
    ctx.globalAlpha = 1; ctx.setLineDash([]);
  }
}

// Draws the visible partials of `view` on ctx at once (see PartialsDrawing).
// Returns {partials, vertices, decimated} drawn (vertices: stroked vertices plus decimated columns).
export function drawPartials(ctx, view, store, selected, dpr, raster = layerRaster) {
  const d = new PartialsDrawing(view, store, selected, dpr, raster, ctx.canvas.width, ctx.canvas.height);
  d.run(ctx);
  return { partials: d.visible.length, vertices: d.vertices, decimated: d.decimated };
}

// ------------------------------------------------------------------------ panning cache
// Panning moves every partial by the same whole number of pixels. Around the view last drawn, the
// partials are drawn into a cache half a view wider on each side and a quarter view taller above
// and below, in idle time and a slice at a time, so no frame waits for it; a frame whose view lies
// inside a finished cache of its scale (the same partials, selection and layer size) copies its part
// (a blit instead of drawing thousands of partials). When the view comes within half a margin of
// the cache's edge, a cache around it is started while the old one still serves; a frame outside
// every finished cache (a zoom, a pan faster than a cache is drawn) draws its partials itself.
const SLICE_MS = 8; // the longest slice of cache drawing in one idle period
const whenIdle = typeof requestIdleCallback === 'function'
  ? (fn) => requestIdleCallback(fn)
  : (fn) => setTimeout(() => fn({ timeRemaining: () => SLICE_MS }), 0);

function sameSet(a, b) {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

// Where a view of geometry g (W x H pixels) lies in cache c: {x, y, room} (room: the least margin
// left on any side, as a fraction of the cache's margin), or null unless wholly inside it at a
// whole-pixel offset.
function placeIn(c, g, W, H) {
  const sx = (g.t0 - c.t0) * g.kx, sy = (c.lfmax - g.lfmax) * g.ky, x = Math.round(sx), y = Math.round(sy);
  if (Math.abs(sx - x) >= 0.01 || Math.abs(sy - y) >= 0.01 || x < 0 || y < 0 || x + W > c.w || y + H > c.h) return null;
  return { x, y, room: Math.min(Math.min(x, c.w - W - x) / c.mx, Math.min(y, c.h - H - y) / c.my) };
}

export class PartialsLayer {
  constructor() {
    this.raster = new SpanRaster(); // the pixel buffer of the cache being drawn
    this.cache = null; // the finished cache: {canvas, t0, lfmax, w, h, mx, my, decimated, ...its key}
    this.job = null; // the cache being drawn: the same plus {drawing, ctx, store}
    this.want = null; // the view of the last frame, while a cache around it is wanted and not started
    this.spare = []; // canvases of dropped caches, reused
    this.idle = false; // an idle callback is pending
  }

  // Draws the partials of `view` on ctx (cleared); returns drawPartials' figures plus `cached`.
  draw(ctx, view, store, selected, dpr) {
    const W = ctx.canvas.width, H = ctx.canvas.height, g = geometry(view);
    const fits = (c) => c.version === store.version && c.dpr === dpr && c.W === W && c.H === H
      && Math.abs(c.kx - g.kx) <= 1e-9 * g.kx && Math.abs(c.ky - g.ky) <= 1e-9 * g.ky && sameSet(selected, c.selected);
    if (this.cache && !fits(this.cache)) this.drop('cache');
    if (this.job && (!fits(this.job) || !placeIn(this.job, g, W, H))) this.drop('job'); // of no use for this view
    const at = this.cache && placeIn(this.cache, g, W, H);
    let out;
    if (at) {
      ctx.drawImage(this.cache.canvas, at.x, at.y, W, H, 0, 0, W, H);
      out = { partials: store.inRange(view.t0, view.t1, view.fmin, view.fmax).length, vertices: 0,
              decimated: this.cache.decimated, cached: true };
    } else {
      out = { ...drawPartials(ctx, view, store, selected, dpr), cached: false };
    }
    this.want = null;
    if (!this.job && (!at || at.room < 0.5)) {
      this.want = { view: { t0: view.t0, t1: view.t1, fmin: view.fmin, fmax: view.fmax }, g, store, version: store.version,
                    selected: new Set(selected), dpr, W, H };
      this.schedule();
    }
    return out;
  }

  drop(which) {
    const c = this[which];
    if (!c) return;
    if (this.spare.length < 2) this.spare.push(c.canvas);
    this[which] = null;
  }

  schedule() {
    if (this.idle) return;
    this.idle = true;
    whenIdle((deadline) => { this.idle = false; this.work(deadline); });
  }

  // One slice of the cache being drawn (started from `want` if none is).
  work(deadline) {
    const until = performance.now() + Math.min(SLICE_MS, deadline.timeRemaining());
    if (!this.job && this.want) {
      const w = this.want;
      this.want = null;
      if (w.store.version === w.version) this.job = this.start(w);
    }
    const job = this.job;
    if (!job) return;
    if (job.store.version !== job.version) { this.drop('job'); return; } // an edit since: its frame wants another
    if (!job.drawing.run(job.ctx, until)) { this.schedule(); return; }
    this.drop('cache');
    this.cache = { ...job, decimated: job.drawing.decimated, drawing: null, ctx: null, store: null };
    this.job = null;
  }

  start(w) {
    const { view, g, W, H } = w;
    const mx = Math.max(1, Math.round(W / 2)), my = Math.max(1, Math.round(H / 4)), cw = W + 2 * mx, ch = H + 2 * my;
    const wide = { t0: view.t0 - mx / g.kx, t1: view.t1 + mx / g.kx, fmin: Math.exp(g.lfmax - (H - 1 + my) / g.ky),
                   fmax: Math.exp(g.lfmax + my / g.ky), w: cw, h: ch };
    let canvas = this.spare.pop();
    if (!canvas || canvas.width !== cw || canvas.height !== ch) canvas = new OffscreenCanvas(cw, ch);
    const ctx = canvas.getContext('2d');
    return { version: w.version, store: w.store, dpr: w.dpr, W, H, kx: g.kx, ky: g.ky, selected: w.selected,
             t0: wide.t0, lfmax: g.lfmax + my / g.ky, w: cw, h: ch, mx, my, canvas, ctx,
             drawing: new PartialsDrawing(wide, w.store, w.selected, w.dpr, this.raster, cw, ch, true) };
  }
}

// The end handles of partial p (canvas pixels): [{end: 'start'|'end', x, y}].
export function handlesOf(view, p) {
  return [{ end: 'start', x: view.x(p.t0), y: view.y(p.f[0]) }, { end: 'end', x: view.x(p.t1), y: view.y(p.f[p.n - 1]) }];
}

export function drawHandles(ctx, view, p, dpr) {
  for (const h of handlesOf(view, p)) {
    ctx.beginPath(); ctx.arc(h.x, h.y, 5 * dpr, 0, 2 * Math.PI);
    ctx.fillStyle = '#fff'; ctx.fill(); ctx.strokeStyle = '#000'; ctx.lineWidth = 1.5 * dpr; ctx.stroke();
  }
}

// ------------------------------------------------------------------------------ hit testing
// The partial nearest canvas point (x, y) within `radius` pixels, or null.
export function hitTest(view, store, x, y, radius) {
  const dt = radius / view.w * (view.t1 - view.t0);
  const tc = view.t(x), fc = view.f(y), r = Math.exp(radius / (view.h - 1) * Math.log(view.fmax / view.fmin));
  let best = null, bestD = radius;
  for (const p of store.inRange(tc - dt, tc + dt, fc / r, fc * r)) {
    const i0 = Math.max(1, firstAtOrAfter(p.t, tc - dt)), i1 = Math.min(p.n - 1, firstAtOrAfter(p.t, tc + dt));
    if (p.n === 1) { const d = Math.hypot(view.x(p.t[0]) - x, view.y(p.f[0]) - y); if (d < bestD) { bestD = d; best = p.id; } continue; }
    for (let i = i0; i <= i1; i++) {
      const x0 = view.x(p.t[i - 1]), y0 = view.y(p.f[i - 1]), x1 = view.x(p.t[i]), y1 = view.y(p.f[i]);
      const dx = x1 - x0, dy = y1 - y0, L = dx * dx + dy * dy;
      const u = L ? Math.max(0, Math.min(1, ((x - x0) * dx + (y - y0) * dy) / L)) : 0;
      const d = Math.hypot(x - (x0 + u * dx), y - (y0 + u * dy));
      if (d < bestD) { bestD = d; best = p.id; }
    }
  }
  return best;
}

// Ids of the partials with a point inside, or a segment crossing, the canvas rectangle.
export function boxSelect(view, store, x0, y0, x1, y1) {
  const [xa, xb] = [Math.min(x0, x1), Math.max(x0, x1)], [ya, yb] = [Math.min(y0, y1), Math.max(y0, y1)];
  const ta = view.t(xa), tb = view.t(xb), fa = view.f(yb), fb = view.f(ya);
  const out = [];
  const inside = (x, y) => x >= xa && x <= xb && y >= ya && y <= yb;
  const crosses = (px, py, qx, qy) => { // Liang-Barsky: does segment p-q meet the box?
    let u0 = 0, u1 = 1;
    const dx = qx - px, dy = qy - py;
    for (const [pk, qk] of [[-dx, px - xa], [dx, xb - px], [-dy, py - ya], [dy, yb - py]]) {
      if (pk === 0) { if (qk < 0) return false; continue; }
      const u = qk / pk;
      if (pk < 0) { if (u > u1) return false; if (u > u0) u0 = u; } else { if (u < u0) return false; if (u < u1) u1 = u; }
    }
    return true;
  };
  for (const p of store.inRange(ta, tb, fa, fb)) {
    const i0 = Math.max(0, firstAtOrAfter(p.t, ta) - 1), i1 = Math.min(p.n - 1, firstAtOrAfter(p.t, tb));
    let hit = false, px = view.x(p.t[i0]), py = view.y(p.f[i0]);
    if (inside(px, py)) hit = true;
    for (let i = i0 + 1; i <= i1 && !hit; i++) {
      const qx = view.x(p.t[i]), qy = view.y(p.f[i]);
      if (inside(qx, qy) || crosses(px, py, qx, qy)) hit = true;
      px = qx; py = qy;
    }
    if (hit) out.push(p.id);
  }
  return out;
}

// ------------------------------------------------------------------------------- selection
// {count, t0, t1, fmin, fmax, amp} of the selected partials (amp: mean over all their points).
export function selectionStats(store, selected) {
  let t0 = Infinity, t1 = -Infinity, fmin = Infinity, fmax = 0, asum = 0, an = 0, count = 0;
  for (const id of selected) {
    const p = store.get(id);
    if (!p) continue;
    count++;
    t0 = Math.min(t0, p.t0); t1 = Math.max(t1, p.t1); fmin = Math.min(fmin, p.fmin); fmax = Math.max(fmax, p.fmax);
    for (let i = 0; i < p.n; i++) asum += p.a[i];
    an += p.n;
  }
  return { count, t0, t1, fmin, fmax, amp: an ? asum / an : 0 };
}

// -------------------------------------------------------------------------- virtual list
// Only the rows in (and just around) the visible part of the list are in the DOM.
export class VirtualList {
  constructor(scroller, { rowHeight = 24, onClick, onMute }) {
    this.scroller = scroller; this.rowHeight = rowHeight; this.onClick = onClick; this.onMute = onMute;
    this.items = []; this.selected = new Set();
    this.spacer = document.createElement('div'); this.spacer.className = 'spacer';
    this.rows = document.createElement('ul'); this.rows.dataset.testid = 'partial-list';
    this.spacer.append(this.rows);
    scroller.append(this.spacer);
    this.frame = null;
    scroller.addEventListener('scroll', () => this.schedule());
    new ResizeObserver(() => this.schedule()).observe(scroller);
  }

  set(items, selected) { this.items = items; this.selected = selected; this.schedule(); }
  schedule() { if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = null; this.render(); }); }

  scrollTo(id) {
    const i = this.items.findIndex((p) => p.id === id);
    if (i < 0) return;
    const top = i * this.rowHeight, h = this.scroller.clientHeight;
    if (top < this.scroller.scrollTop || top + this.rowHeight > this.scroller.scrollTop + h) this.scroller.scrollTop = top - h / 2;
    this.schedule();
  }

  render() {
    const rh = this.rowHeight, n = this.items.length;
    this.spacer.style.height = `${n * rh}px`;
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / rh) - 5);
    const last = Math.min(n, Math.ceil((this.scroller.scrollTop + this.scroller.clientHeight) / rh) + 5);
    this.rows.style.transform = `translateY(${first * rh}px)`;
    const rows = [];
    for (let i = first; i < last; i++) {
      const p = this.items[i];
      const li = document.createElement('li');
      li.dataset.testid = 'partial-item'; li.dataset.id = p.id; li.style.height = `${rh}px`;
      li.classList.toggle('selected', this.selected.has(p.id)); li.classList.toggle('muted', p.is_muted);
      const sw = document.createElement('span'); sw.className = 'swatch'; sw.style.background = p.color;
      const label = document.createElement('span'); label.className = 'label';
      label.textContent = `${p.id} · ${p.fmean.toFixed(1)} Hz · ${p.t0.toFixed(2)}–${p.t1.toFixed(2)} s`;
      const mute = document.createElement('button'); mute.textContent = p.is_muted ? 'unmute' : 'mute';
      mute.dataset.testid = 'partial-mute';
      mute.addEventListener('click', (e) => { e.stopPropagation(); this.onMute(p); });
      li.append(sw, label, mute);
      li.addEventListener('click', (e) => this.onClick(p.id, e.shiftKey));
      rows.push(li);
    }
    this.rows.replaceChildren(...rows);
  }
}
