// Rendering: pure functions from API data to DOM nodes. All data goes in as text.

import { h, num, dur, ago, clock } from './dom.js';

/** The task statuses in the order an operator reads them; others follow. */
export const STATUSES = ['pending', 'in_progress', 'blocked', 'failed', 'completed', 'cancelled'];
const LABELS = {
  pending: 'pending', in_progress: 'in progress', blocked: 'blocked', completed: 'completed',
  failed: 'failed', cancelled: 'cancelled', scheduled: 'scheduled', waiting: 'waiting',
  retrying: 'retrying', dead: 'dead',
};
export const label = (s) => LABELS[s] || String(s).replace(/_/g, ' ');

/** A CSS class for a status, only from a fixed set (data never names a class). */
const cls = (s) => (Object.hasOwn(LABELS, s) ? `st-${s}` : 'st-other');

export const badge = (s) => h('span', { class: `badge ${cls(s)}` }, label(s));

const count = (by, s) => Number((by && by[s]) || 0);

/** The stacked bar of a project's tasks by status. */
export function bar(by, total) {
  return h('div', { class: 'bar', title: STATUSES.map((s) => `${label(s)} ${count(by, s)}`).join(' · ') },
    total > 0
      ? STATUSES.filter((s) => count(by, s) > 0).map((s) => h('span', { class: cls(s), grow: count(by, s) }))
      : h('span', { class: 'empty', grow: 1 }));
}

/** Big status numbers: the totals strip and a project's header. */
export function counts(by, opts = {}) {
  const extra = Object.keys(by || {}).filter((s) => !STATUSES.includes(s) && count(by, s) > 0);
  return h('div', { class: 'counts' }, [...STATUSES, ...extra].map((s) => h(opts.onPick ? 'button' : 'div', {
    class: `count ${cls(s)}${opts.active === s ? ' active' : ''}${count(by, s) === 0 ? ' zero' : ''}`,
    data: { status: s },
    on: opts.onPick ? { click: () => opts.onPick(s) } : null,
    type: opts.onPick ? 'button' : null,
  }, h('span', { class: 'n' }, num(count(by, s))), h('span', { class: 'l' }, label(s)))));
}

/** One project's card on the overview. */
export function projectCard(p, st) {
  const by = (st && st.by_status) || {};
  const total = st ? st.total : 0;
  return h('a', { class: `card project ${p.status !== 'active' ? 'inactive' : ''}`, href: `#/projects/${p.id}`, data: { projectId: p.id } },
    h('div', { class: 'card-head' },
      h('span', { class: 'name' }, p.name),
      p.status !== 'active' ? badge(p.status) : null,
      h('span', { class: 'total' }, h('b', { data: { total: '' } }, num(total)), ' tasks')),
    bar(by, total),
    h('div', { class: 'mini' }, STATUSES.map((s) => h('span', { class: `mc ${cls(s)}${count(by, s) ? '' : ' zero'}`, data: { status: s } },
      h('b', {}, num(count(by, s))), ' ', label(s)))),
    h('div', { class: 'foot' },
      h('span', {}, 'oldest pending ', h('b', {}, st && st.oldest_pending_age_seconds !== null && st.oldest_pending_age_seconds !== undefined ? dur(st.oldest_pending_age_seconds) : '–')),
      h('span', {}, 'done last hour ', h('b', {}, num(st ? st.completed_last_hour : 0)))));
}

/** A row of the tasks table. */
export function taskRow(t) {
  return h('tr', { data: { taskId: t.id } },
    h('td', { class: 'id' }, h('a', { href: `#/tasks/${t.id}` }, `#${t.id}`)),
    h('td', { class: 'title' }, h('a', { href: `#/tasks/${t.id}` }, t.title),
      (t.labels || []).slice(0, 4).map((l) => h('span', { class: 'chip' }, l))),
    h('td', {}, badge(t.status)),
    h('td', { class: 'num' }, num(t.priority)),
    h('td', { class: 'who' }, t.assignee || '–'),
    h('td', { class: 'when', title: t.updated_at }, ago(t.updated_at)));
}

/** What an event changed, as short text. */
function changeText(ev) {
  const c = ev.changes && typeof ev.changes === 'object' ? ev.changes : {};
  const parts = [];
  for (const [k, v] of Object.entries(c)) {
    if (k === 'title' && ev.type === 'deleted') continue;
    if (k === 'lease_expires_at') continue;
    let s = v === null ? 'null' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    if (s.length > 60) s = `${s.slice(0, 57)}…`;
    parts.push(`${k} → ${s}`);
  }
  return parts.join(', ');
}

const EVENT_CLASS = {
  created: 'ev-created', claimed: 'ev-claimed', completed: 'ev-completed', failed: 'ev-failed',
  deleted: 'ev-deleted', cancelled: 'ev-deleted', retried: 'ev-retried', lease_expired: 'ev-retried',
  blocked: 'ev-retried', updated: 'ev-updated',
};

/** A row of an activity feed. `title` is the task's title when known. */
export function eventRow(ev, title, fresh) {
  const st = ev.changes && typeof ev.changes.status === 'string' ? ev.changes.status : null;
  const kind = Object.hasOwn(EVENT_CLASS, ev.type) ? EVENT_CLASS[ev.type] : 'ev-updated';
  return h('li', { class: `event ${fresh ? 'fresh' : ''}`, data: { eventId: ev.id, taskId: ev.task_id ?? '' } },
    h('span', { class: 'time', title: ev.created_at }, clock(ev.created_at)),
    h('span', { class: `etype ${kind}` }, String(ev.type).replace(/_/g, ' ')),
    h('span', { class: 'what' },
      ev.task_id ? h('a', { href: `#/tasks/${ev.task_id}` }, `#${ev.task_id} `) : 'project ',
      h('span', { class: 'etitle' }, title || ''),
      st && ev.type === 'updated' ? [' ', badge(st)] : null,
      h('span', { class: 'changes' }, ev.type === 'created' ? '' : changeText(ev))),
    h('span', { class: 'actor' }, ev.actor || ''));
}

/** A labelled value in the task detail. */
export const kv = (k, ...v) => [h('dt', {}, k), h('dd', {}, ...v)];

/** A JSON value shown as indented text. */
export function jsonBlock(title, v, kind) {
  const empty = v === null || v === undefined || (typeof v === 'object' && Object.keys(v).length === 0);
  return h('section', { class: `panel json ${kind || ''}` },
    h('h3', {}, title),
    empty ? h('p', { class: 'muted' }, v === null || v === undefined ? 'none' : 'empty')
      : h('pre', {}, JSON.stringify(v, null, 2)));
}
