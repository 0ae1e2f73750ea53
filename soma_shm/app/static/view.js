// The visible window (time range, log-frequency range) and the mapping to canvas pixels, plus the
// rulers. Row geometry follows the engine: row r of an H-row image has frequency
// fmax * (fmin/fmax) ** (r / (H - 1)); column c spans [t0 + c*dt, t0 + (c+1)*dt).
export class View {
  constructor() { this.t0 = 0; this.t1 = 1; this.fmin = 20; this.fmax = 20000; this.limits = null; this.w = 1; this.h = 1; }

  setLimits(limits) { this.limits = { ...limits }; this.fit(); }
  fit() { if (!this.limits) return; Object.assign(this, { t0: this.limits.t0, t1: this.limits.t1, fmin: this.limits.fmin, fmax: this.limits.fmax }); }
  key() { return [this.t0, this.t1, this.fmin, this.fmax, this.w, this.h].map((v) => +v.toPrecision(9)).join(','); }

  x(t) { return (t - this.t0) / (this.t1 - this.t0) * this.w; }
  t(x) { return this.t0 + x / this.w * (this.t1 - this.t0); }
  y(f) { return Math.log(this.fmax / f) / Math.log(this.fmax / this.fmin) * (this.h - 1) + 0.5; }
  f(y) { return this.fmax * Math.pow(this.fmin / this.fmax, (y - 0.5) / (this.h - 1)); }

  // Zoom time around canvas x by `factor` (< 1 zooms in).
  zoomX(x, factor) {
    const L = this.limits, tc = this.t(x);
    const minSpan = 0.01, maxSpan = L.t1 - L.t0;
    let span = Math.min(maxSpan, Math.max(minSpan, (this.t1 - this.t0) * factor));
    let t0 = tc - (tc - this.t0) / (this.t1 - this.t0) * span;
    this._setT(t0, span);
  }
  zoomY(y, factor) {
    const L = this.limits, fc = Math.log(this.f(y));
    const lo = Math.log(this.fmin), hi = Math.log(this.fmax);
    const maxSpan = Math.log(L.fmax / L.fmin), minSpan = Math.log(2) / 12;
    const span = Math.min(maxSpan, Math.max(minSpan, (hi - lo) * factor));
    const a = (fc - lo) / (hi - lo);
    this._setF(fc - a * span, span);
  }
  pan(dx, dy) {
    const dt = dx / this.w * (this.t1 - this.t0);
    this._setT(this.t0 - dt, this.t1 - this.t0);
    const dl = dy / (this.h - 1) * Math.log(this.fmax / this.fmin);
    this._setF(Math.log(this.fmin) + dl, Math.log(this.fmax / this.fmin));
  }
  _setT(t0, span) {
    const L = this.limits;
    t0 = Math.min(Math.max(t0, L.t0), L.t1 - span);
    this.t0 = t0; this.t1 = Math.min(L.t1, t0 + span);
  }
  _setF(lo, span) {
    const L = this.limits, Lmin = Math.log(L.fmin), Lmax = Math.log(L.fmax);
    lo = Math.min(Math.max(lo, Lmin), Lmax - span);
    this.fmin = Math.exp(lo); this.fmax = Math.min(L.fmax, Math.exp(lo + span));
  }

  // Canvas transform that draws an image of geometry g (t0, t1, fmin, fmax, width, height) in place.
  imageTransform(g) {
    const a = (g.t1 - g.t0) / g.width * this.w / (this.t1 - this.t0);
    const e = (g.t0 - this.t0) * this.w / (this.t1 - this.t0);
    const ki = (g.height - 1) / Math.log(g.fmax / g.fmin);
    const kv = (this.h - 1) / Math.log(this.fmax / this.fmin);
    const d = kv / ki;
    const f = (Math.log(this.fmax) - Math.log(g.fmax)) * kv - 0.5 * d + 0.5;
    return [a, 0, 0, d, e, f];
  }
}

function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

export function timeTicks(view, pixels) {
  const step = niceStep(view.t1 - view.t0, pixels / 90);
  const out = [];
  for (let t = Math.ceil(view.t0 / step) * step; t <= view.t1 + 1e-9; t += step) out.push(t);
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return out.map((t) => ({ t, label: `${t.toFixed(digits)} s` }));
}

export function freqTicks(view, pixels) {
  const fmt = (f) => (f >= 1000 ? `${+(f / 1000).toPrecision(3)}k` : `${+f.toPrecision(3)}`);
  const ticks = [];
  const octaves = Math.log2(view.fmax / view.fmin);
  if (octaves > 2.5) {
    for (let e = Math.floor(Math.log10(view.fmin)); e <= Math.ceil(Math.log10(view.fmax)); e++) {
      for (const m of [1, 2, 5]) {
        const f = m * Math.pow(10, e);
        if (f >= view.fmin && f <= view.fmax) ticks.push(f);
      }
    }
  } else {
    const step = niceStep(view.fmax - view.fmin, pixels / 40);
    for (let f = Math.ceil(view.fmin / step) * step; f <= view.fmax; f += step) ticks.push(f);
  }
  return ticks.map((f) => ({ f, label: fmt(f) }));
}
