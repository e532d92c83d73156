// /audit: history (GET /api/audit/events, newest first, paged with `before`) and the live stream
// (GET /api/audit/stream) under the same filters; pause/resume; CSV export; chain verification for admins.
// Audited commands are attacker-controlled text: they only ever reach the page through textContent.
// An exec (source "execve", from `omaudit-agent watch`) shows its program and directory under the command; a typed
// line with an audit session gets a "What ran" button listing the execs of its session and terminal from its time
// to 10 s after by the host's clock (GET /api/audit/events?source=execve&session=…&tty=…&host_from=…&host_to=…).
// A command search under three characters reads a window of the newest events, not an index: the page says so.
import { api, clearFieldErrors, el, showFieldError, utc } from '/assets/console.js';

const body = document.querySelector('#events tbody');
const state = document.getElementById('live-state');
const problem = document.getElementById('problem');
let stream = null;
let paused = false;
let held = [];
let next = null;
let seen = new Set();

// A link (from a notification) may carry the filters: /audit?host=web1.
const linked = new URLSearchParams(window.location.search);
for (const key of ['host', 'app', 'user', 'source', 'q']) {
  const input = document.querySelector(`#filters [name="${key}"]`);
  if (input && linked.get(key)) input.value = linked.get(key);
}

function filters() {
  const form = new FormData(document.getElementById('filters'));
  const params = new URLSearchParams();
  for (const key of ['host', 'app', 'user', 'source', 'q']) {
    const value = String(form.get(key) || '').trim();
    if (value) params.set(key, value);
  }
  return params;
}

const count = (n, noun) => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** The host-time text `seconds` after `datetime` (both `YYYY-MM-DD HH:MM:SS`, the host's own clock). */
function later(datetime, seconds) {
  const t = Date.parse(`${datetime.replace(' ', 'T')}Z`) + seconds * 1000;
  return new Date(t).toISOString().slice(0, 19).replace('T', ' ');
}

function execDetail(e) {
  const parts = [];
  if (e.exe) parts.push(`program ${e.exe}`);
  if (e.cwd) parts.push(`in ${e.cwd}`);
  if (e.exit_code != null && e.exit_code !== 0) parts.push(`exec failed (errno ${-e.exit_code})`);
  return el('div', parts.join(' · '), { class: 'exec-detail' });
}

async function whatRan(e, cell, button) {
  const shown = cell.querySelector('.ran');
  if (shown) { shown.remove(); button.textContent = 'What ran'; return; }
  const params = new URLSearchParams({ source: 'execve', host: e.host, session: String(e.session), tty: e.tty,
    host_from: e.datetime, host_to: later(e.datetime, 10), after: '0', limit: '200' });
  const page = await api(`/api/audit/events?${params}`);
  const list = el('ul', undefined, { class: 'ran' });
  if (page.events.length === 0) list.append(el('li', 'No exec recorded for this session and terminal.'));
  for (const x of page.events) {
    const item = el('li');
    item.append(el('span', `${x.datetime.slice(11)} `, { class: 'ran-time' }), el('code', x.command), execDetail(x));
    list.append(item);
  }
  cell.append(list);
  button.textContent = 'Hide what ran';
}

function row(e) {
  const alerts = e.alerts || [];
  const tr = el('tr', undefined, { 'data-id': String(e.id), 'data-source': e.source, class: alerts.length ? 'flagged' : '' });
  // data-label: on a phone the table turns into cards that label each line (console.css, table.stack).
  const cell = (label, text, attrs = {}) => el('td', text, { 'data-label': label, ...attrs });
  const flags = cell('Alerts', undefined, { class: 'alerts' });
  // An alert is marked by a word and an icon, not only by the row's colour.
  if (alerts.length) flags.append(el('span', '⚠ alert: ', { class: 'alert-mark' }), alerts.join(', '));
  const command = cell('Command', undefined, { class: e.source === 'execve' ? 'command exec' : 'command' });
  command.append(el('span', e.command, { class: 'text' }));
  if (e.source === 'execve') command.append(execDetail(e));
  else if (e.session != null && e.tty) {
    const button = el('button', 'What ran', { type: 'button', class: 'what-ran' });
    button.addEventListener('click', () => { whatRan(e, command, button).catch((err) => { problem.textContent = err.message; }); });
    command.append(' ', button);
  }
  tr.append(cell('Received (UTC)', utc(e.received_at)), cell('Host time', e.datetime || ''), cell('Host', e.host),
    cell('User', e.user), cell('Login user', e.login_user || ''), cell('TTY', e.tty || ''), command, flags);
  return tr;
}

function add(e, atTop) {
  if (seen.has(e.id)) return;
  seen.add(e.id);
  if (atTop) body.prepend(row(e)); else body.append(row(e));
}

async function history(before) {
  const params = filters();
  params.set('limit', '100');
  if (before) params.set('before', String(before));
  const page = await api(`/api/audit/events?${params}`);
  for (const e of page.events) add(e, false);
  next = page.next ?? null;
  document.getElementById('older').hidden = next === null;
  const scanned = document.getElementById('scanned');
  const w = page.scanned;
  const why = w?.reason === 'short_term' ? 'A term under three characters is not indexed'
    : 'This database has no command index';
  scanned.textContent = w
    ? `${why}: searched events ${w.first_id}–${w.last_id}` +
      (w.complete ? ' (to the end).' : '. "Show older" searches further back.')
    : '';
}

function live() {
  if (stream) stream.close();
  stream = new EventSource(`/api/audit/stream?${filters()}`);
  stream.addEventListener('open', () => { state.textContent = paused ? 'paused' : 'live'; });
  stream.addEventListener('error', () => { state.textContent = 'reconnecting…'; });
  stream.addEventListener('audit', (m) => {
    const e = JSON.parse(m.data);
    if (paused) { held.push(e); state.textContent = `paused (${held.length} new)`; } else add(e, true);
  });
  stream.addEventListener('lagged', () => { problem.textContent = 'Some live events were skipped; reload to see them.'; });
}

async function start() {
  problem.textContent = '';
  body.replaceChildren();
  seen = new Set();
  document.getElementById('csv').href = `/api/audit/events.csv?${filters()}`;
  live();
  await history(null);
}

document.getElementById('filters').addEventListener('submit', (e) => {
  e.preventDefault();
  start().catch((err) => { problem.textContent = err.message; });
});
document.getElementById('pause').addEventListener('click', (e) => {
  paused = !paused;
  e.target.textContent = paused ? 'Resume' : 'Pause';
  if (!paused) { for (const held_event of held) add(held_event, true); held = []; }
  state.textContent = paused ? 'paused' : 'live';
});
document.getElementById('older').addEventListener('click', () => {
  history(next).catch((err) => { problem.textContent = err.message; });
});
const admin = document.getElementById('main').dataset.admin === 'true';

async function rules() {
  const list = await api('/api/audit/rules');
  document.querySelector('#rules tbody').replaceChildren(...list.map((r) => {
    const tr = el('tr', undefined, { 'data-rule': r.name });
    tr.append(el('td', r.name), el('td', r.pattern, { class: 'command' }), el('td', r.host_id == null ? 'any' : (r.host ?? `#${r.host_id}`)),
      el('td', r.user_name ?? 'any'));
    const cell = el('td');
    if (admin) {
      const button = el('button', `Delete ${r.name}`, { type: 'button' });
      button.addEventListener('click', async () => {
        try { await api(`/api/audit/rules/${r.id}`, { method: 'DELETE' }); await rules(); } catch (err) { problem.textContent = err.message; }
      });
      cell.append(button);
    }
    tr.append(cell);
    return tr;
  }));
}

if (admin) {
  const form = document.getElementById('rule-form');
  form.hidden = false;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { name: String(data.get('name')).trim(), pattern: String(data.get('pattern')) };
    for (const key of ['host', 'user']) { const v = String(data.get(key) || '').trim(); if (v) body[key] = v; }
    try {
      await api('/api/audit/rules', { method: 'POST', body });
      form.reset();
      clearFieldErrors(form);
      document.getElementById('rule-problem').textContent = '';
      await rules();
    } catch (err) {
      showFieldError(form, { name: 'r-name', pattern: 'r-pattern', host: 'r-host', user: 'r-user' }, err,
        document.getElementById('rule-problem'));
    }
  });
}
rules().catch((err) => { problem.textContent = err.message; });

if (admin) {
  document.getElementById('verify-box').hidden = false;
  document.getElementById('verify').addEventListener('click', async () => {
    const out = document.getElementById('verify-result');
    out.textContent = 'verifying…';
    const table = document.getElementById('chains');
    table.hidden = true;
    try {
      const report = await api('/api/audit/verify');
      out.textContent = report.findings.length === 0
        ? `Intact: ${count(report.hosts, 'host')}, ${count(report.rows, 'row')}.`
        : `${count(report.findings.length, 'problem')} on ${report.chains.filter((c) => c.problems > 0).length} of ${count(report.hosts, 'host')}.`;
      // One row per host, each problem in words under the host it is on.
      table.tBodies[0].replaceChildren(...report.chains.map((chain) => {
        const tr = el('tr', undefined, { 'data-host': chain.host, class: chain.problems ? 'flagged' : '' });
        const status = el('td', chain.problems ? count(chain.problems, 'problem') : 'intact');
        for (const f of report.findings.filter((x) => x.host_id === chain.host_id)) {
          status.append(el('div', `at chain position ${f.chain_seq}: ${f.problem}`));
        }
        tr.append(el('td', chain.host), el('td', String(chain.rows)), status);
        return tr;
      }));
      table.hidden = false;
    } catch (err) { out.textContent = err.message; }
  });
}

start().catch((err) => { problem.textContent = err.message; });
