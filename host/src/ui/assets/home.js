// /: what needs attention. Running jobs (re-read every 5 s while the page is visible), failed jobs of the last
// 24 h, audit alerts, hosts whose audit events stopped, backends' health (every 60 s: each check talks to the
// backend), rejected modules, and two charts drawn here as SVG (no library, nothing from a CDN): jobs per day by
// status and audit events per hour with alert hours marked. Every text from the server goes through textContent.
import { api, el, statusBadge, utc } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
const DAY = 86_400_000;
const HOUR = 3_600_000;
// The job statuses in the chart, bottom to top.
const STATUSES = ['succeeded', 'failed', 'cancelled', 'rejected', 'expired', 'running', 'queued', 'pending_approval'];
let modules = new Map();

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** A list's items, or one line saying there is nothing. */
function fill(list, items, none) {
  list.replaceChildren(...(items.length ? items : [el('li', none, { class: 'empty' })]));
}

function jobItem(job) {
  const li = el('li', undefined, { 'data-job': String(job.id) });
  const name = modules.get(job.module) ?? `module ${job.module}`;
  li.append(el('a', `Job ${job.id}`, { href: `/jobs/${job.id}` }), ' ', statusBadge(job.status), ` ${name} on `,
    `${job.hosts.length} host${job.hosts.length === 1 ? '' : 's'}, by `, el('span', job.created_by),
    el('div', job.error || utc(job.created_at), { class: 'muted' }));
  return li;
}

async function jobs() {
  const since = utc(Date.now() - DAY).slice(0, 16);
  const [waiting, running, queued, failed] = await Promise.all([api('/api/jobs?status=pending_approval&limit=20'),
    api('/api/jobs?status=running&limit=20'), api('/api/jobs?status=queued&limit=20'),
    api(`/api/jobs?status=failed&from=${encodeURIComponent(since)}&limit=20`)]);
  fill($('waiting'), waiting.map(jobItem), 'No job waits for approval.');
  fill($('running'), [...running, ...queued].map(jobItem), 'No job is running.');
  fill($('failed'), failed.map(jobItem), 'No job failed in the last 24 hours.');
}

let alertHours = new Set();

async function alerts() {
  const page = await api('/api/audit/events?limit=500');
  const flagged = page.events.filter((e) => (e.alerts || []).length);
  alertHours = new Set(flagged.map((e) => e.received_at - (e.received_at % HOUR)));
  fill($('alerts'), flagged.slice(0, 10).map((e) => {
    const li = el('li', undefined, { class: 'flagged-item' });
    li.append(el('span', '⚠ alert: ', { class: 'alert-mark' }), el('span', e.alerts.join(', ')), ' — ',
      el('code', e.command), el('div', `${e.host}, ${e.user}, ${utc(e.received_at)}`, { class: 'muted' }));
    return li;
  }), 'No alert among the newest events.');
}

async function modulesAndBackends() {
  const [list, health] = await Promise.all([api('/api/modules'), api('/api/backends')]);
  modules = new Map(list.filter((m) => m.id !== null && m.id !== undefined).map((m) => [m.id, m.name]));
  fill($('rejected'), list.filter((m) => m.status !== 'loaded').map((m) => {
    const li = el('li');
    li.append(el('code', m.file), el('div', m.error || m.status, { class: 'muted' }));
    return li;
  }), 'Every module in plugins.d is loaded.');
  fill($('backends'), health.map((b) => {
    const li = el('li', undefined, { 'data-backend': b.backend });
    li.append(statusBadge(b.ok ? 'ok' : 'failed'), ` ${b.backend}${b.default ? ' (default)' : ''}`,
      el('div', b.detail, { class: 'muted' }));
    return li;
  }), 'No backend is configured.');
}

/** Vertical bars: `columns` is [{ label, parts: [[class, value]…], marked }]; axis labels every `every` columns. */
function barChart(box, columns, { title, every = 1 }) {
  const width = 640, height = 200, left = 34, bottom = 22, top = 14;
  const max = Math.max(1, ...columns.map((c) => c.parts.reduce((sum, [, v]) => sum + v, 0)));
  const step = (width - left) / columns.length;
  const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': title });
  chart.append(svg('title', {}, title));
  chart.append(svg('line', { class: 'axis', x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  chart.append(svg('text', { x: left - 4, y: top + 4, 'text-anchor': 'end' }, max));
  chart.append(svg('text', { x: left - 4, y: height - bottom, 'text-anchor': 'end' }, 0));
  columns.forEach((c, i) => {
    let y = height - bottom;
    const x = left + i * step + step * 0.15;
    for (const [cls, value] of c.parts) {
      if (!value) continue;
      const h = ((height - bottom - top) * value) / max;
      y -= h;
      const bar = svg('rect', { class: cls, x, y, width: step * 0.7, height: h });
      bar.append(svg('title', {}, `${c.label}: ${value} ${cls.replace('bar-', '')}`));
      chart.append(bar);
    }
    if (c.marked) chart.append(svg('path', { class: 'alert-marker', d: `M${x + step * 0.35} ${top - 12} l5 9 h-10 z` }));
    if (i % every === 0) chart.append(svg('text', { x: x + step * 0.35, y: height - 6, 'text-anchor': 'middle' }, c.short));
  });
  box.replaceChildren(chart);
}

function charts(overview) {
  if (!overview.fleet_counts) {
    const note = () => el('p', 'Counts of the whole fleet are not shown to users limited by grants.', { class: 'muted' });
    $('jobs-chart').replaceChildren(note());
    $('audit-chart').replaceChildren(note());
    $('jobs-legend').replaceChildren();
    return;
  }
  const today = overview.now - (overview.now % DAY);
  const days = [];
  for (let d = 13; d >= 0; d -= 1) {
    const day = today - d * DAY;
    const counts = new Map(overview.jobs_per_day.filter((c) => c.day === day).map((c) => [c.status, c.jobs]));
    const label = utc(day).slice(0, 10);
    days.push({ label, short: label.slice(5), parts: STATUSES.map((s) => [`bar-${s}`, counts.get(s) || 0]) });
  }
  const total = overview.jobs_per_day.reduce((sum, c) => sum + c.jobs, 0);
  barChart($('jobs-chart'), days, { title: `Jobs per day for 14 days: ${total} in all`, every: 2 });
  const seen = new Set(overview.jobs_per_day.map((c) => c.status));
  $('jobs-legend').replaceChildren(...STATUSES.filter((s) => seen.has(s)).map((s) => {
    const n = overview.jobs_per_day.filter((c) => c.status === s).reduce((sum, c) => sum + c.jobs, 0);
    const li = el('li', undefined, { 'data-status': s });
    li.append(el('span', undefined, { class: `swatch ${s}`, 'aria-hidden': 'true' }), `${n} ${s}`);
    return li;
  }));
  const thisHour = overview.now - (overview.now % HOUR);
  const hours = [];
  for (let h = 23; h >= 0; h -= 1) {
    const hour = thisHour - h * HOUR;
    const events = overview.audit_per_hour.find((c) => c.hour === hour)?.events || 0;
    const label = utc(hour).slice(11, 16);
    hours.push({ label: `${label} UTC${alertHours.has(hour) ? ', with alerts' : ''}`, short: label, marked: alertHours.has(hour),
      parts: [['bar-events', events]] });
  }
  const events = overview.audit_per_hour.reduce((sum, c) => sum + c.events, 0);
  barChart($('audit-chart'), hours, { title: `Audit events per hour for 24 hours: ${events} in all, `
    + `${hours.filter((h) => h.marked).length} hours with alerts`, every: 4 });
}

async function overview() {
  const data = await api(`/api/overview?silent_after_secs=${$('silent-after').value}`);
  fill($('silent'), data.silent_hosts.map((h) => {
    const li = el('li', undefined, { 'data-host': h.host });
    li.append(el('span', '⚠ ', { class: 'alert-mark', 'aria-hidden': 'true' }), el('span', h.host, { class: 'hosts' }),
      el('div', `last event ${utc(h.last_event_at)}`, { class: 'muted' }));
    return li;
  }), 'Every host that sent audit events did so recently.');
  charts(data);
}

// Lists and charts every 5 s (the server keeps the charts' counts as it stores jobs and events, so reading them
// is cheap), and the silent hosts at once when their threshold changes. The charts follow the alerts, whose hours
// they mark.
async function refresh() {
  if (!document.hidden) {
    try {
      await Promise.all([jobs(), alerts().then(overview)]);
      $('problem').textContent = '';
      $('updated').textContent = `Updated ${utc(Date.now())}; re-read every 5 s.`;
    } catch (err) { $('problem').textContent = err.message; }
  }
  setTimeout(refresh, 5000);
}

async function slowRefresh() {
  try { await modulesAndBackends(); } catch (err) { $('problem').textContent = err.message; }
  setTimeout(slowRefresh, 60_000);
}

$('silent-after').addEventListener('change', () => overview().catch((err) => { $('problem').textContent = err.message; }));
modulesAndBackends().catch((err) => { $('problem').textContent = err.message; }).finally(() => {
  refresh();
  setTimeout(slowRefresh, 60_000);
});
