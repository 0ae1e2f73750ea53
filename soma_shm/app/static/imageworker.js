// Off the page's main thread: fetch a raw uint8 image blob, colour it through the LUT and hand back
// an ImageBitmap, so zooming never waits on a million-pixel loop. The body is coloured chunk by
// chunk as it streams in, so colouring overlaps the transfer.
import { LUT } from './colormap.js';

self.onmessage = async (e) => {
  const { id, blob, token } = e.data;
  const t0 = performance.now();
  try {
    const res = await fetch(`/blob/${blob}`, { headers: { 'X-Soma-Token': token } });
    if (!res.ok) throw new Error(`image ${blob} is gone (a newer one replaced it)`);
    const width = Number(res.headers.get('X-Width')), height = Number(res.headers.get('X-Height'));
    const n = width * height;
    const rgba = new ImageData(width, height);
    const out = new Uint32Array(rgba.data.buffer);
    const reader = res.body.getReader();
    let k = 0, colour = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (k + value.length > n) throw new Error(`image ${blob}: more than ${n} bytes for ${width}x${height}`);
      const c = performance.now();
      for (let i = 0; i < value.length; i++) out[k + i] = LUT[value[i]];
      colour += performance.now() - c;
      k += value.length;
    }
    if (k !== n) throw new Error(`image ${blob}: ${k} bytes for ${width}x${height}`);
    const t1 = performance.now();
    const bitmap = await createImageBitmap(rgba);
    const ms = { fetch: t1 - t0 - colour, colour, bitmap: performance.now() - t1 };
    self.postMessage({ id, bitmap, width, height, ms }, [bitmap]);
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
