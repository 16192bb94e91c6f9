// The API client: the key lives in sessionStorage and travels only in the
// Authorization header, never in a URL (so it is in no log, history or Referer).

const KEY = 'dashboard-backend.key';

export const auth = {
  get key() { return sessionStorage.getItem(KEY) || ''; },
  set(k) { if (k) sessionStorage.setItem(KEY, k); else sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const h = { Accept: 'application/json', ...extra };
  if (auth.key) h.Authorization = `Bearer ${auth.key}`;
  return h;
}

/** GET a JSON resource; throws ApiError on a non-2xx answer or a network failure. */
export async function get(path, opts = {}) {
  let res;
  try {
    res = await fetch(path, { headers: headers(), cache: 'no-store', signal: opts.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the server cannot be reached');
  }
  let body = null;
  try { body = await res.json(); } catch { /* an empty or non-JSON body */ }
  if (!res.ok) {
    const err = (body && body.error) || {};
    throw new ApiError(res.status, err.code || 'http', err.message);
  }
  return body;
}

/** The fallback's period: new activity shows within 2 s, request time included. */
const POLL_MS = 1000;

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/**
 * Follows a project's activity from event id `after` on. Reads the Server-Sent Events
 * stream with fetch() (EventSource cannot send the Authorization header); a server
 * without the stream (404/405) is polled every second instead. Calls onEvent(event) in
 * id order, each event once, and onState('stream'|'polling'|'reconnecting'|'error', detail).
 * Returns a function that stops it.
 */
export function follow(pid, after, onEvent, onState) {
  const ctl = new AbortController();
  const { signal } = ctl;
  let last = after;
  const deliver = (ev) => {
    if (typeof ev.id === 'number' && ev.id <= last) return; // resumed streams never repeat
    if (typeof ev.id === 'number') last = ev.id;
    onEvent(ev);
  };

  async function stream() {
    const res = await fetch(`/projects/${pid}/events/stream?after=${last}`, {
      headers: headers({ Accept: 'text/event-stream', 'Last-Event-ID': String(last) }),
      cache: 'no-store',
      signal,
    });
    if (res.status === 404 || res.status === 405 || res.status === 501) return 'absent';
    if (!res.ok || !res.body) {
      const retry = Number(res.headers.get('Retry-After')) || 2;
      if (res.status === 401 || res.status === 403) onState('error', `HTTP ${res.status}`);
      await res.body?.cancel().catch(() => {});
      return retry * 1000;
    }
    onState('stream');
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let data = [];
    let type = 'message';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return 1000;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length) {
            try {
              const ev = JSON.parse(data.join('\n'));
              if (!ev.type) ev.type = type;
              deliver(ev);
            } catch { /* not an event of ours */ }
          }
          data = [];
          type = 'message';
        } else if (line.startsWith(':')) {
          // keep-alive comment
        } else {
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let v = i < 0 ? '' : line.slice(i + 1);
          if (v.startsWith(' ')) v = v.slice(1);
          if (field === 'data') data.push(v);
          else if (field === 'event') type = v;
        }
      }
    }
  }

  async function poll() {
    onState('polling');
    while (!signal.aborted) {
      try {
        for (;;) {
          const page = await get(`/projects/${pid}/events?after=${last}&limit=500`, { signal });
          page.items.forEach(deliver);
          if (!page.next_cursor) break;
        }
        onState('polling');
      } catch (e) {
        if (signal.aborted) return;
        onState('error', e.message);
      }
      await sleep(POLL_MS, signal);
    }
  }

  (async () => {
    while (!signal.aborted) {
      let next;
      try {
        next = await stream();
      } catch (e) {
        if (signal.aborted) return;
        next = 2000;
      }
      if (signal.aborted) return;
      if (next === 'absent') return poll();
      onState('reconnecting');
      await sleep(next, signal);
    }
  })();
  return () => ctl.abort();
}

/**
 * Recent history of a project's feed: up to `n` of its latest events, and the id to
 * follow from. Ids only grow, so the end is found with a few one-event probes
 * instead of reading the whole feed.
 */
export async function recentEvents(pid, n = 40) {
  const url = (after, limit) => `/projects/${pid}/events?after=${after}&limit=${limit}`;
  const first = await get(url(0, 500));
  if (!first.next_cursor) return first.items.slice(-n);
  const probe = async (after) => (await get(url(after, 1))).items[0]?.id ?? null;
  let lo = first.items[first.items.length - 1].id;
  let step = 1024;
  let hi = null;
  while (hi === null) {
    const p = await probe(lo + step);
    if (p === null) hi = lo + step; else { lo = p; step *= 4; }
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const p = await probe(mid);
    if (p === null) hi = mid; else lo = p;
  }
  let items = [];
  for (let back = 2000; back <= 512000 && items.length < n; back *= 8) {
    items = [];
    let after = Math.max(0, lo - back);
    for (let i = 0; i < 20; i++) {
      const page = await get(url(after, 500));
      items = items.concat(page.items).slice(-n);
      if (!page.next_cursor) break;
      after = Number(page.next_cursor);
    }
    if (lo - back <= 0) break;
  }
  return items;
}
