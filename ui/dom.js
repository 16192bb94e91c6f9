// DOM helpers. Every string given to h() becomes a text node: data is never parsed as HTML.

/** Builds an element: h('td', {class: 'x', data: {id: 3}, on: {click: f}}, 'text', child, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    else if (k === 'on') for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
    else if (k === 'grow') el.style.flexGrow = String(v); // CSSOM, which the CSP allows
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces the children of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Sets text only when it changed (no flicker, no layout work on a wall screen). */
export function setText(el, s) {
  s = String(s);
  if (el.textContent !== s) el.textContent = s;
}

export const $ = (sel, root = document) => root.querySelector(sel);

const nf = new Intl.NumberFormat('en-US');
export const num = (n) => (n === null || n === undefined ? '–' : nf.format(n));

/** 93 → "1m 33s", 7200 → "2h 0m". */
export function dur(secs) {
  if (secs === null || secs === undefined) return '–';
  secs = Math.max(0, Math.round(secs));
  if (secs < 60) return `${secs}s`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ${secs % 60}s`;
  if (secs < 86400) return `${Math.floor(secs / 3600)}h ${Math.floor((secs % 3600) / 60)}m`;
  return `${Math.floor(secs / 86400)}d ${Math.floor((secs % 86400) / 3600)}h`;
}

/** An RFC 3339 time as "12s ago". */
export function ago(ts) {
  if (!ts) return '–';
  const t = Date.parse(ts);
  if (Number.isNaN(t)) return String(ts);
  return `${dur((Date.now() - t) / 1000)} ago`;
}

/** An RFC 3339 time as local "HH:MM:SS" (today) or date and time. */
export function clock(ts) {
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts || '–');
  const same = d.toDateString() === new Date().toDateString();
  const t = d.toLocaleTimeString('en-GB', { hour12: false });
  return same ? t : `${d.toISOString().slice(0, 10)} ${t}`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${u[i]}`;
}
