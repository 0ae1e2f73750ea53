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

// Subscribe to backend events; `onEvent(event)` is called for each. Resolves once the stream is
// open: the server registers a stream before it answers, so the state fetched after that misses
// no event (fetched before, an event published in between, such as "opened", would never arrive).
// A dropped stream reconnects by itself; `onReopen()` is then called, as events were lost meanwhile.
// A refused stream (too many pages) resolves too: the page still draws what the state says.
export function subscribe(onEvent, onReopen = () => {}) {
  window.somaPushCount = 0;
  if (windowMode) {
    window.somaPush = (event) => { window.somaPushCount++; onEvent(event); };
    return Promise.resolve();
  }
  const source = new EventSource(`/events?token=${encodeURIComponent(token)}`);
  source.onmessage = (msg) => { window.somaPushCount++; onEvent(JSON.parse(msg.data)); };
  return new Promise((resolve) => {
    let opened = false;
    source.onopen = () => { if (opened) onReopen(); else { opened = true; resolve(); } };
    source.onerror = () => {
      if (!opened && source.readyState === EventSource.CLOSED) { opened = true; resolve(); }
    };
  });
}
