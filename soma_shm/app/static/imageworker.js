// Off the page's main thread: fetch a raw uint8 image blob, colour it through the LUT and hand back
// an ImageBitmap, so zooming never waits on a million-pixel loop.
import { LUT } from './colormap.js';

self.onmessage = async (e) => {
  const { id, blob, token } = e.data;
  try {
    const res = await fetch(`/blob/${blob}`, { headers: { 'X-Soma-Token': token } });
    if (!res.ok) throw new Error(`image ${blob} is gone (a newer one replaced it)`);
    const width = Number(res.headers.get('X-Width')), height = Number(res.headers.get('X-Height'));
    const pixels = new Uint8Array(await res.arrayBuffer());
    if (pixels.length !== width * height) throw new Error(`image ${blob}: ${pixels.length} bytes for ${width}x${height}`);
    const rgba = new ImageData(width, height);
    const out = new Uint32Array(rgba.data.buffer);
    for (let i = 0; i < pixels.length; i++) out[i] = LUT[pixels[i]];
    const bitmap = await createImageBitmap(rgba);
    self.postMessage({ id, bitmap, width, height }, [bitmap]);
  } catch (err) {
    self.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
};
