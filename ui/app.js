// The dashboard: login, routing (#/, #/projects/ID, #/tasks/ID), periodic refresh,
// the live feed and the service vitals. Read-only: it only ever GETs.

import { auth, get, follow, recentEvents, ApiError } from './api.js';
import { h, fill, setText, $, num, dur, bytes, ago, clock } from './dom.js';
import { label, badge, bar, counts, projectCard, taskRow, eventRow, kv, jsonBlock } from './views.js';

const main = $('#main');
let view = null; // { stop() } of the current view
let generation = 0; // bumps on every navigation: late answers of a left view are dropped

// ---------------------------------------------------------------- login

function showLogin(message) {
  if (view) view.stop();
  view = null;
  document.body.classList.add('locked');
  $('#login').hidden = false;
  setText($('#login-error'), message || '');
  $('#key').focus();
}

async function tryKey() {
  try {
    await get('/stats');
    return true;
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return false;
    throw e;
  }
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('#key');
  const k = input.value.trim();
  if (!k) return;
  auth.set(k);
  try {
    if (!(await tryKey())) {
      auth.set('');
      setText($('#login-error'), 'That key was not accepted.');
      return;
    }
  } catch (err) {
    setText($('#login-error'), err.message);
    return;
  }
  input.value = '';
  start();
});

$('#signout').addEventListener('click', () => {
  auth.set('');
  showLogin('Signed out.');
});

/** Any 401 from a view means the key went away (revoked, or another tab signed out). */
function onError(e) {
  if (e instanceof ApiError && e.status === 401) {
    auth.set('');
    showLogin('The key is no longer accepted; enter a key.');
    return true;
  }
  return false;
}

// ---------------------------------------------------------------- vitals

const vitals = { prev: null, timer: null };

/** p99 from the per-route histograms' growth since the last sample (streams and long polls left out). */
function p99(prev, cur) {
  const le = cur.metrics.http_request_duration_buckets_le;
  if (!le) return null;
  const key = (r) => `${r.method} ${r.route}`;
  const before = new Map((prev ? prev.metrics.http_requests_by_route : []).map((r) => [key(r), r]));
  const buckets = new Array(le.length + 1).fill(0);
  let total = 0;
  for (const r of cur.metrics.http_requests_by_route || []) {
    if (/\/stream$|\/claim$/.test(r.route) || !r.buckets) continue;
    const b = before.get(key(r));
    const n = r.count - (b ? b.count : 0);
    if (n <= 0) continue;
    let inBuckets = 0;
    r.buckets.forEach((c, i) => {
      const d = c - (b && b.buckets ? b.buckets[i] : 0);
      buckets[i] += d;
      inBuckets += d;
    });
    buckets[le.length] += n - inBuckets;
    total += n;
  }
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i];
    if (seen >= total * 0.99) return i < le.length ? le[i] : Infinity;
  }
  return Infinity;
}

const ms = (s) => (s === null ? '–' : s === Infinity ? '> 5 s' : s < 0.001 ? `≤ ${(s * 1000).toFixed(1)} ms` : `≤ ${Math.round(s * 1000)} ms`);

async function refreshVitals() {
  const el = $('#vitals');
  try {
    const [health, m] = await Promise.all([
      get('/health').catch((e) => (e instanceof ApiError && e.status === 503 ? { status: 'error' } : Promise.reject(e))),
      get('/metrics/json'),
    ]);
    const prev = vitals.prev;
    const dt = prev ? (Date.parse(m.timestamp) - Date.parse(prev.timestamp)) / 1000 : 0;
    const rate = (k) => (prev && dt > 0 ? (m.metrics[k] - prev.metrics[k]) / dt : null);
    const rps = rate('http_requests_total');
    const eps = rate('http_errors_total');
    const status = health.status || 'error';
    const tile = $('[data-vital=health]', el);
    tile.className = `vital health h-${['ok', 'degraded', 'draining'].includes(status) ? status : 'error'}`;
    setText($('.v', tile), status);
    setText($('[data-vital=rps] .v', el), rps === null ? '…' : rps.toFixed(rps < 10 ? 1 : 0));
    setText($('[data-vital=errors] .v', el), eps === null ? '…' : eps.toFixed(eps < 10 ? 1 : 0));
    $('[data-vital=errors]', el).classList.toggle('bad', eps > 0);
    setText($('[data-vital=p99] .v', el), prev ? ms(p99(prev, m)) : '…');
    setText($('[data-vital=uptime] .v', el), dur(m.uptime_seconds));
    setText($('[data-vital=memory] .v', el), bytes(m.metrics.process_resident_memory_bytes));
    setText($('[data-vital=db] .v', el), bytes(m.metrics.db_size_bytes));
    vitals.prev = m;
    el.classList.remove('stale');
  } catch (e) {
    el.classList.add('stale');
    const tile = $('[data-vital=health]', el);
    tile.className = 'vital health h-error';
    setText($('.v', tile), 'unreachable');
  }
}

// ---------------------------------------------------------------- helpers

function every(ms, f) {
  f();
  const t = setInterval(f, ms);
  return () => clearInterval(t);
}

function problem(e) {
  return h('div', { class: 'problem' }, e instanceof ApiError && e.status === 404 ? 'Not found.' : `Cannot load: ${e.message}`);
}

function crumbs(...parts) {
  fill($('#crumbs'), parts.map((p, i) => [i ? h('span', { class: 'sep' }, '›') : null,
    p.href ? h('a', { href: p.href }, p.text) : h('span', {}, p.text)]));
}

function updated(el) {
  setText(el, `updated ${clock(new Date().toISOString())}`);
}

/** Lists every project (the API pages by 500 at most). */
async function allProjects() {
  let items = [];
  let cursor = null;
  do {
    const page = await get(`/projects?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items = items.concat(page.items);
    cursor = page.next_cursor;
  } while (cursor && items.length < 5000);
  return items;
}

// ---------------------------------------------------------------- overview

function overview() {
  crumbs({ text: 'Projects' });
  document.title = 'Projects · dashboard-backend';
  const totals = h('div', { class: 'totals' });
  const grid = h('div', { class: 'grid', id: 'projects' });
  const stamp = h('span', { class: 'stamp' });
  fill(main, h('section', { class: 'overview' },
    h('div', { class: 'section-head' }, h('h2', {}, 'All projects'), stamp), totals, grid));
  let projects = [];
  let lastNames = 0;
  let lastSig = '';
  const g = generation;
  const stop = every(5000, async () => {
    try {
      // The counts every 5 s in one request; names change rarely: re-read them every
      // 30 s, or at once when the counts name a project not seen yet.
      const stats = await get('/stats');
      const known = new Set(projects.map((p) => p.id));
      if (Date.now() - lastNames > 30000 || stats.items.some((s) => !known.has(s.project_id))) {
        projects = await allProjects();
        lastNames = Date.now();
      }
      if (g !== generation) return;
      // Re-render only on change: a wall screen keeps hover and selection steady.
      const sig = JSON.stringify([projects, stats.items.map(({ timestamp, oldest_pending_age_seconds: a, ...r }) => [r, a === null ? null : Math.floor(a / 5)])]);
      if (sig === lastSig) { updated(stamp); return; }
      lastSig = sig;
      const byId = new Map(stats.items.map((s) => [s.project_id, s]));
      const sum = {};
      for (const s of stats.items) for (const [k, v] of Object.entries(s.by_status || {})) sum[k] = (sum[k] || 0) + Number(v);
      fill(totals, counts(sum));
      const rank = (p) => (p.status === 'active' ? 0 : p.status === 'paused' ? 1 : 2);
      const order = [...projects].sort((a, b) => rank(a) - rank(b) || a.id - b.id);
      fill(grid, order.length ? order.map((p) => projectCard(p, byId.get(p.id)))
        : h('p', { class: 'muted' }, 'No projects yet.'));
      updated(stamp);
    } catch (e) {
      if (!onError(e) && g === generation) fill(grid, problem(e));
    }
  });
  return { stop };
}

// ---------------------------------------------------------------- project

function project(pid) {
  const titles = new Map();
  const state = { status: null, sort: 'priority', cursors: [null], page: 0 };
  let lastCounts = '';
  const headName = h('h2', {}, `Project #${pid}`);
  const headDesc = h('p', { class: 'desc' });
  const headBadge = h('span');
  const countsEl = h('div');
  const barEl = h('div');
  const tbody = h('tbody');
  const pageInfo = h('span', { class: 'page' });
  const prevBtn = h('button', { type: 'button', on: { click: () => go(state.page - 1) } }, '← Previous');
  const nextBtn = h('button', { type: 'button', on: { click: () => go(state.page + 1) } }, 'Next →');
  const filterEl = h('span', { class: 'filter' });
  const sortEl = h('select', { 'aria-label': 'Order', on: { change: () => { state.sort = sortEl.value; state.cursors = [null]; state.page = 0; loadTasks(); } } },
    h('option', { value: 'priority' }, 'queue order (priority)'),
    h('option', { value: 'created_at' }, 'oldest first'),
    h('option', { value: 'updated_at' }, 'least recently updated'));
  const feed = h('ol', { class: 'feed', id: 'feed' });
  const feedState = h('span', { class: 'live' }, 'connecting…');
  const stamp = h('span', { class: 'stamp' });
  crumbs({ text: 'Projects', href: '#/' }, { text: `#${pid}` });
  fill(main, h('section', { class: 'project' },
    h('div', { class: 'section-head' }, h('div', { class: 'titles' }, h('div', { class: 'line' }, headName, headBadge), headDesc), stamp),
    barEl, countsEl,
    h('div', { class: 'cols' },
      h('section', { class: 'panel tasks' },
        h('div', { class: 'panel-head' }, h('h3', {}, 'Tasks'), filterEl, sortEl),
        h('table', {}, h('thead', {}, h('tr', {}, ['ID', 'Title', 'Status', 'Prio', 'Assignee', 'Updated'].map((c) => h('th', {}, c)))), tbody),
        h('div', { class: 'pager' }, prevBtn, pageInfo, nextBtn)),
      h('section', { class: 'panel activity' },
        h('div', { class: 'panel-head' }, h('h3', {}, 'Live activity'), feedState),
        feed))));
  const g = generation;

  function pick(s) {
    state.status = state.status === s ? null : s;
    state.cursors = [null];
    state.page = 0;
    loadTasks();
    loadStats();
  }

  async function loadStats() {
    try {
      const [p, st] = await Promise.all([get(`/projects/${pid}`), get(`/projects/${pid}/stats`)]);
      if (g !== generation) return;
      setText(headName, p.name);
      setText(headDesc, p.description || '');
      fill(headBadge, p.status !== 'active' ? badge(p.status) : null);
      crumbs({ text: 'Projects', href: '#/' }, { text: p.name });
      document.title = `${p.name} · dashboard-backend`;
      const sig = JSON.stringify([st.by_status, st.total, state.status]);
      if (sig !== lastCounts) {
        lastCounts = sig;
        fill(barEl, bar(st.by_status, st.total));
        fill(countsEl, counts(st.by_status, { onPick: pick, active: state.status }));
      }
      updated(stamp);
    } catch (e) {
      if (!onError(e) && g === generation) fill(countsEl, problem(e));
    }
  }

  async function loadTasks() {
    const cursor = state.cursors[state.page];
    const q = ['limit=25', `sort=${state.sort}`];
    if (state.status) q.push(`status=${encodeURIComponent(state.status)}`);
    if (cursor) q.push(`cursor=${encodeURIComponent(cursor)}`);
    try {
      const page = await get(`/projects/${pid}/tasks?${q.join('&')}`);
      if (g !== generation) return;
      for (const t of page.items) titles.set(t.id, t.title);
      fill(tbody, page.items.length ? page.items.map(taskRow)
        : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, state.status ? `No ${label(state.status)} tasks.` : 'No tasks.')));
      state.cursors[state.page + 1] = page.next_cursor;
      state.cursors.length = state.page + 2;
      prevBtn.disabled = state.page === 0;
      nextBtn.disabled = !page.next_cursor;
      setText(pageInfo, `page ${state.page + 1}`);
      fill(filterEl, state.status ? ['showing ', badge(state.status), ' ', h('button', { type: 'button', class: 'link', on: { click: () => pick(state.status) } }, 'show all')] : 'all statuses');
    } catch (e) {
      if (!onError(e) && g === generation) fill(tbody, h('tr', {}, h('td', { colspan: 6 }, problem(e))));
    }
  }

  function go(n) {
    if (n < 0 || (n > state.page && !state.cursors[n])) return;
    state.page = n;
    loadTasks();
  }

  // The feed: newest on top, at most 100 rows; titles looked up once per task.
  const lookups = new Set();
  function title(ev) {
    if (ev.type === 'deleted' && ev.changes && typeof ev.changes.title === 'string') return ev.changes.title;
    if (ev.changes && typeof ev.changes.title === 'string') titles.set(ev.task_id, ev.changes.title);
    return titles.get(ev.task_id);
  }
  function lookup(ev, row) {
    if (!ev.task_id || titles.has(ev.task_id) || ev.type === 'deleted') return;
    if (lookups.has(ev.task_id)) return;
    lookups.add(ev.task_id);
    get(`/tasks/${ev.task_id}`).then((t) => {
      titles.set(t.id, t.title);
      for (const li of feed.querySelectorAll(`li[data-task-id="${t.id}"] .etitle`)) setText(li, t.title);
    }).catch(() => {});
    return row;
  }
  function add(ev, fresh) {
    const row = eventRow(ev, title(ev), fresh);
    feed.prepend(row);
    lookup(ev, row);
    while (feed.children.length > 100) feed.lastChild.remove();
  }

  let refreshSoon = null;
  let stopFeed = () => {};
  (async () => {
    try {
      const recent = await recentEvents(pid);
      if (g !== generation) return;
      recent.forEach((ev) => add(ev, false));
      const after = recent.length ? recent[recent.length - 1].id : 0;
      stopFeed = follow(pid, after, (ev) => {
        add(ev, true);
        // Counts and the table follow the feed, at most once a second.
        if (!refreshSoon) refreshSoon = setTimeout(() => { refreshSoon = null; loadStats(); loadTasks(); }, 1000);
      }, (s, detail) => {
        feedState.className = `live ${s}`;
        setText(feedState, { stream: 'live', polling: 'live (polling)', reconnecting: 'reconnecting…', error: `error: ${detail || ''}` }[s] || s);
      });
    } catch (e) {
      if (!onError(e) && g === generation) fill(feed, h('li', {}, problem(e)));
    }
  })();
  loadTasks();
  const stopStats = every(5000, loadStats);
  const stopTasks = setInterval(loadTasks, 15000);
  return { stop() { stopFeed(); stopStats(); clearInterval(stopTasks); clearTimeout(refreshSoon); } };
}

// ---------------------------------------------------------------- task

function task(id) {
  crumbs({ text: 'Projects', href: '#/' }, { text: `task #${id}` });
  const body = h('div', {}, h('p', { class: 'muted' }, 'loading…'));
  fill(main, h('section', { class: 'task' }, body));
  const g = generation;
  let projectName = null;
  let lastSig = '';
  const load = async () => {
    try {
      const t = await get(`/tasks/${id}`);
      if (!projectName) {
        projectName = (await get(`/projects/${t.project_id}`).catch(() => ({ name: `#${t.project_id}` }))).name;
      }
      // This task's events: the project's feed read in pages, this task's kept.
      let evs = [];
      let after = 0;
      for (let i = 0; i < 10; i++) {
        const page = await get(`/projects/${t.project_id}/events?after=${after}&limit=500`);
        evs = evs.concat(page.items.filter((e) => e.task_id === t.id));
        if (!page.next_cursor) break;
        after = Number(page.next_cursor);
      }
      if (g !== generation) return;
      const sig = JSON.stringify([t, evs.length]);
      if (sig === lastSig) return;
      lastSig = sig;
      document.title = `#${t.id} ${t.title} · dashboard-backend`;
      crumbs({ text: 'Projects', href: '#/' }, { text: projectName, href: `#/projects/${t.project_id}` }, { text: `#${t.id}` });
      const when = (ts) => (ts ? [clock(ts), h('span', { class: 'muted' }, ' (', h('span', { class: 'when', title: ts }, ago(ts)), ')')] : '–');
      fill(body,
        h('div', { class: 'section-head' }, h('div', { class: 'titles' },
          h('div', { class: 'line' }, h('h2', { id: 'task-title' }, t.title), badge(t.status)),
          h('p', { class: 'muted' }, `task #${t.id} · version ${t.version}`)),
        h('span', { class: 'stamp' }, `updated ${clock(new Date().toISOString())}`)),
        h('div', { class: 'cols task-cols' },
          h('div', {},
            h('section', { class: 'panel' }, h('dl', { class: 'kv' },
              kv('Project', h('a', { href: `#/projects/${t.project_id}` }, projectName)),
              kv('Status', badge(t.status)),
              kv('Priority', num(t.priority)),
              kv('Assignee', t.assignee || '–'),
              t.attempt !== undefined ? kv('Attempt', `${t.attempt} of ${t.max_attempts ?? '?'}`) : null,
              kv('Labels', (t.labels || []).length ? t.labels.map((l) => h('span', { class: 'chip' }, l)) : '–'),
              t.depends_on && t.depends_on.length ? kv('Depends on', t.depends_on.map((d) => [h('a', { href: `#/tasks/${d}` }, `#${d}`), ' '])) : null,
              kv('Created', when(t.created_at)),
              kv('Started', when(t.started_at)),
              kv('Completed', when(t.completed_at)),
              kv('Updated', when(t.updated_at)),
              t.lease_expires_at ? kv('Lease expires', when(t.lease_expires_at)) : null,
              t.not_before ? kv('Not before', when(t.not_before)) : null)),
            t.description ? h('section', { class: 'panel' }, h('h3', {}, 'Description'), h('p', { class: 'description' }, t.description)) : null,
            jsonBlock('Metadata', t.metadata),
            jsonBlock('Result', t.result, 'result'),
            jsonBlock('Error', t.error, t.error ? 'error' : '')),
          h('section', { class: 'panel activity' }, h('div', { class: 'panel-head' }, h('h3', {}, 'Events')),
            h('ol', { class: 'feed' }, evs.length ? evs.slice().reverse().map((e) => eventRow(e, '', false)) : h('li', { class: 'muted' }, 'No events.')))));
    } catch (e) {
      if (!onError(e) && g === generation) fill(body, problem(e));
    }
  };
  const stop = every(5000, load);
  return { stop };
}

// ---------------------------------------------------------------- routing

function route() {
  if (document.body.classList.contains('locked')) return;
  if (view) view.stop();
  generation++;
  const hash = location.hash.replace(/^#/, '') || '/';
  let m;
  if ((m = hash.match(/^\/projects\/(\d+)$/))) view = project(Number(m[1]));
  else if ((m = hash.match(/^\/tasks\/(\d+)$/))) view = task(Number(m[1]));
  else view = overview();
  window.scrollTo(0, 0);
}

window.addEventListener('hashchange', route);

function start() {
  document.body.classList.remove('locked');
  $('#login').hidden = true;
  setText($('#whoami'), auth.key ? 'signed in with a key' : 'auth disabled');
  $('#signout').hidden = !auth.key;
  if (!vitals.timer) vitals.timer = setInterval(refreshVitals, 5000);
  refreshVitals();
  route();
}

// A key from this tab's session, or none at all (AUTH_DISABLED): try it before asking.
(async () => {
  try {
    if (await tryKey()) start();
    else { auth.set(''); showLogin(''); }
  } catch (e) {
    showLogin(`The server cannot be reached: ${e.message}`);
  }
})();

// Relative times ("12s ago") keep moving between refreshes.
setInterval(() => { for (const el of document.querySelectorAll('.when[title]')) setText(el, ago(el.title)); }, 1000);

