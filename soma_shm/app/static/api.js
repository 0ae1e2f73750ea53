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

// An image blob, fetched and coloured by the image worker: {bitmap, width, height}.
const imageWorker = new Worker('/static/imageworker.js', { type: 'module' });
const waiting = new Map();
let nextId = 1;
imageWorker.onmessage = (e) => {
  const { id, error, ...image } = e.data;
  const w = waiting.get(id);
  waiting.delete(id);
  if (error) w.reject(new ApiError('NotFound', error)); else w.resolve(image);
};
export function loadImage(blob) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    imageWorker.postMessage({ id, blob, token });
  });
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
