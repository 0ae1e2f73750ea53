// Playback through Web Audio: the original and the resynthesis, a mix between them, speed 1/8x..8x.
// Audio comes from the backend in chunks (GET /audio: planar float32, original then resynthesis)
// fetched a few seconds ahead of the playhead; each chunk becomes one AudioBuffer source started
// at its exact time on the AudioContext clock, so chunks play back to back without gaps.
// A chunk that arrives after its start time is an underrun: it is counted and played from where
// the clock is. After an edit (a `synth` event) or a speed change the stream is handed over at a
// point just ahead of the clock to freshly fetched chunks, so the change is heard at once.
import { token } from './api.js';

const FIRST_FRAMES_S = 0.25; // the first chunk is short: it decides how soon sound starts
const MAX_CHUNK_S = 4.0; // later chunks double up to this
const AHEAD_S = 6.0; // keep this much scheduled ahead of the clock
const START_LEAD_S = 0.03; // schedule the first chunk this far after the click
const HANDOVER_S = 0.25; // an edit or a speed change takes over this far ahead of the clock

export class Player {
  // hooks: duration() -> s, startTime() -> s, onTick(t | null) playhead (null: stopped), onState(playing)
  constructor(hooks) {
    this.hooks = hooks;
    this.ctx = null;
    this.speed = 1;
    this.mix = 0.5;
    this.gen = 0;
    this.playing = false;
    this.sources = [];
    this.metrics = { underruns: 0, chunks: 0, bytes: 0, pressedAt: null, firstSoundAt: null, startLatencyMs: null,
      handovers: 0, fetchMs: [], errors: 0 };
    window.somaPlayback = this;
  }

  ensureContext() {
    if (!this.ctx) {
      this.ctx = new AudioContext({ latencyHint: 'interactive' });
      this.gOrig = this.ctx.createGain();
      this.gSynth = this.ctx.createGain();
      this.gOrig.connect(this.ctx.destination);
      this.gSynth.connect(this.ctx.destination);
      this.applyMix(true);
    }
    return this.ctx;
  }

  // Called when a file opens: the context is created (suspended until the first Play, a user
  // gesture), so setting up the audio device is not paid when Play is pressed.
  prepare() { this.ensureContext(); }

  applyMix(now = false) {
    if (!this.ctx) return;
    // equal-power: the middle of the knob is both at -3 dB
    const a = Math.cos(this.mix * Math.PI / 2), b = Math.sin(this.mix * Math.PI / 2);
    const t = this.ctx.currentTime;
    if (now) { this.gOrig.gain.value = a; this.gSynth.gain.value = b; return; }
    this.gOrig.gain.setTargetAtTime(a, t, 0.01);
    this.gSynth.gain.setTargetAtTime(b, t, 0.01);
  }

  setMix(v) { this.mix = Math.min(1, Math.max(0, v)); this.applyMix(); }

  setSpeed(s) {
    if (s === this.speed) return;
    const t = this.playing ? this.position() : null;
    this.speed = s;
    if (this.playing) this.handover(t, false);
  }

  // Source time (s) the listener hears now.
  position() {
    if (!this.playing || !this.ctx) return null;
    const dt = Math.max(0, this.ctx.currentTime - this.startCtx);
    return Math.min(this.hooks.duration(), this.startT + dt * this.speed);
  }

  toggle() { if (this.playing) this.stop(); else this.play(); }

  async play(t = null) {
    this.metrics.pressedAt = performance.now();
    this.metrics.firstSoundAt = null;
    this.metrics.playChunks = 0; // chunks scheduled since this Play
    const ctx = this.ensureContext();
    if (ctx.state !== 'running') await ctx.resume();
    this.metrics.contextReadyMs = performance.now() - this.metrics.pressedAt;
    const start = t === null ? this.hooks.startTime() : t;
    this.playing = true;
    this.hooks.onState(true);
    this.begin(start, ctx.currentTime + START_LEAD_S);
    this.fresh = true;
    this.tick();
  }

  stop() {
    this.gen++;
    this.playing = false;
    for (const s of this.sources) { try { s.stop(); } catch (e) { /* not started */ } }
    this.sources = [];
    this.hooks.onTick(null);
    this.hooks.onState(false);
  }

  // A synth update or a speed change while playing: new chunks take over a little ahead.
  handover(t = null, count = true) {
    if (!this.playing) return;
    const at = this.ctx.currentTime + HANDOVER_S;
    const tAt = t === null ? this.startT + Math.max(0, at - this.startCtx) * this.speed : t;
    for (const s of this.sources) { try { s.stop(at); } catch (e) { /* ended */ } }
    this.sources = [];
    if (count) this.metrics.handovers++;
    this.fresh = false;
    this.begin(tAt, at);
  }

  begin(tSource, ctxTime) {
    const gen = ++this.gen;
    const fs = this.hooks.sampleRate();
    this.fs = fs;
    this.startT = tSource;
    this.startCtx = ctxTime;
    this.startFrame = Math.round(tSource * fs / this.speed);
    this.nextFrame = this.startFrame;
    this.totalFrames = Math.floor(this.hooks.duration() * fs / this.speed);
    this.chunkS = FIRST_FRAMES_S;
    this.pump(gen);
  }

  async pump(gen) {
    while (this.playing && gen === this.gen) {
      const when = this.startCtx + (this.nextFrame - this.startFrame) / this.fs;
      if (this.nextFrame >= this.totalFrames) return;
      if (when - this.ctx.currentTime > AHEAD_S) { await new Promise((r) => setTimeout(r, 200)); continue; }
      const frames = Math.min(Math.round(this.chunkS * this.fs), this.totalFrames - this.nextFrame);
      const start = this.nextFrame;
      this.chunkS = Math.min(MAX_CHUNK_S, this.chunkS * 2);
      let data;
      const t0 = performance.now();
      try {
        const res = await fetch(`/audio?token=${encodeURIComponent(token)}&start=${start}&frames=${frames}&speed=${this.speed}&origin=${this.startFrame}`);
        if (!res.ok) throw new Error((await res.json()).error.message);
        data = new Float32Array(await res.arrayBuffer());
      } catch (e) {
        this.metrics.errors++;
        if (gen === this.gen) { this.stop(); this.hooks.onError(`playback: ${e.message}`); }
        return;
      }
      this.metrics.fetchMs.push(performance.now() - t0);
      if (this.metrics.fetchMs.length > 200) this.metrics.fetchMs.shift();
      if (!this.playing || gen !== this.gen) return;
      this.metrics.chunks++;
      this.metrics.playChunks++;
      this.metrics.bytes += data.byteLength;
      this.schedule(data, frames, when);
      this.nextFrame = start + frames;
    }
  }

  schedule(data, frames, when) {
    const ctx = this.ctx;
    const orig = ctx.createBuffer(1, frames, this.fs);
    const synth = ctx.createBuffer(1, frames, this.fs);
    orig.copyToChannel(data.subarray(0, frames), 0);
    synth.copyToChannel(data.subarray(frames, 2 * frames), 0);
    let offset = 0;
    const now = ctx.currentTime;
    if (this.fresh) { // the first chunk of a Play: sound starts when it is here, not before
      this.fresh = false;
      const shift = Math.max(0, now + 0.005 - when);
      this.startCtx += shift;
      when += shift;
    }
    if (when < now) { // late: an underrun; play the rest of the chunk from now
      this.metrics.underruns++;
      offset = now - when;
      when = now;
      if (offset >= frames / this.fs) return;
    }
    for (const [buf, gain] of [[orig, this.gOrig], [synth, this.gSynth]]) {
      const src = ctx.createBufferSource();
      src.buffer = buf;
      src.connect(gain);
      src.start(when, offset);
      src.onended = () => { const i = this.sources.indexOf(src); if (i >= 0) this.sources.splice(i, 1); };
      this.sources.push(src);
    }
    if (this.metrics.firstSoundAt === null) {
      // page clock of the first sample leaving the context (plus its output latency)
      const lat = (ctx.outputLatency || ctx.baseLatency || 0);
      this.metrics.firstSoundAt = performance.now() + (when - ctx.currentTime + lat) * 1000;
      this.metrics.startLatencyMs = this.metrics.firstSoundAt - this.metrics.pressedAt;
    }
  }

  tick() {
    if (!this.playing) return;
    const t = this.position();
    if (t !== null && t >= this.hooks.duration() - 1e-3 && this.nextFrame >= this.totalFrames) { this.stop(); return; }
    this.hooks.onTick(t);
    requestAnimationFrame(() => this.tick());
  }
}
