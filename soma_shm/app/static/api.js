// Talking to the backend: POST /api/<method> with the per-run token, binary image blobs, and
// pushed events (server-sent events in a browser, window.somaPush from Python in the window).
const params = new URLSearchParams(location.search);
export const token = params.get('token') || '';
export const windowMode = params.get('push') === 'window';

export class ApiError extends Error {
  constructor(type, message) { super(message); this.type = type; }
}

export async function call(method, body = {}) {
  const res = await fetch(`/api/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Soma-Token': token },
    body: JSON.stringify(body),
  });
  let data;
  try { data = await res.json(); } catch (e) { throw new ApiError('HTTPError', `${method}: HTTP ${res.status}`); }
  if (!data.ok) throw new ApiError(data.error.type, data.error.message);
  return data.result;
}

export async function upload(file) {
  const res = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, {
    method: 'POST', headers: { 'X-Soma-Token': token, 'Content-Type': 'application/octet-stream' }, body: file,
  });
  const data = await res.json();
  if (!data.ok) throw new ApiError(data.error.type, data.error.message);
  return data.result;
}

// A raw uint8 image: {pixels: Uint8Array, width, height}.
export async function fetchBlob(id) {
  const res = await fetch(`/blob/${id}`, { headers: { 'X-Soma-Token': token } });
  if (!res.ok) throw new ApiError('NotFound', `image ${id} is gone`);
  const width = Number(res.headers.get('X-Width'));
  const height = Number(res.headers.get('X-Height'));
  const pixels = new Uint8Array(await res.arrayBuffer());
  if (pixels.length !== width * height) throw new ApiError('BadImage', `image ${id}: ${pixels.length} bytes for ${width}x${height}`);
  return { pixels, width, height };
}

// Subscribe to backend events; `onEvent(event)` is called for each.
export function subscribe(onEvent) {
  window.somaPushCount = 0;
  if (windowMode) {
    window.somaPush = (event) => { window.somaPushCount++; onEvent(event); };
    return;
  }
  const source = new EventSource(`/events?token=${encodeURIComponent(token)}`);
  source.onmessage = (msg) => { window.somaPushCount++; onEvent(JSON.parse(msg.data)); };
}
