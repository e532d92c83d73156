// /jobs/{id}: the job's facts, per-host results as hosts finish (GET /api/jobs/{id}/events), hosts grouped by
// identical output with folded host lists, and the cancel button.
import { api, el, foldHosts } from '/assets/console.js';

const main = document.getElementById('main');
const id = main.dataset.jobId;
const latest = new Map(); // host → its newest result
let hosts = [];

function text(idName, value) {
  document.getElementById(idName).textContent = value ?? '';
}

function showFacts(job) {
  text('status', job.status);
  text('module', `${job.module} (version ${job.module_version})`);
  text('backend', job.backend);
  text('created-by', job.created_by);
  text('error', job.error || '—');
  hosts = job.hosts || hosts;
  const cancel = document.getElementById('cancel');
  if (cancel) cancel.disabled = !['queued', 'running'].includes(job.status);
}

function render() {
  text('progress', `${latest.size} of ${hosts.length || latest.size} finished`);
  const groups = new Map();
  for (const r of latest.values()) {
    const key = JSON.stringify([r.status, r.rc, r.stdout, r.stderr]);
    if (!groups.has(key)) groups.set(key, { result: r, hosts: [] });
    groups.get(key).hosts.push(r.host);
  }
  const box = document.getElementById('groups');
  box.replaceChildren();
  const sorted = [...groups.values()].sort((a, b) => b.hosts.length - a.hosts.length);
  for (const g of sorted) {
    const section = el('section', undefined, { class: `group ${g.result.status}` });
    const title = el('h3', undefined);
    title.append(el('span', foldHosts(g.hosts), { class: 'hosts' }));
    const rc = g.result.rc === null || g.result.rc === undefined ? '' : `, rc ${g.result.rc}`;
    title.append(el('span', ` — ${g.hosts.length} host${g.hosts.length === 1 ? '' : 's'}: ${g.result.status}${rc}`));
    section.append(title);
    if (g.result.stdout) section.append(el('pre', g.result.stdout, { class: 'stdout' }));
    if (g.result.stderr) section.append(el('pre', g.result.stderr, { class: 'stderr' }));
    box.append(section);
  }
}

async function start() {
  showFacts(await api(`/api/jobs/${id}`));
  const events = new EventSource(`/api/jobs/${id}/events`);
  events.addEventListener('host', (e) => {
    const r = JSON.parse(e.data);
    latest.set(r.host, r);
    render();
  });
  events.addEventListener('end', (e) => {
    const job = JSON.parse(e.data);
    events.close();
    latest.clear();
    for (const r of job.results) latest.set(r.host, r);
    showFacts(job);
    render();
  });
}

const form = document.getElementById('cancel-form');
if (form) {
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    document.getElementById('cancel').disabled = true;
    try { await api(`/api/jobs/${id}/cancel`, { method: 'POST' }); } catch (err) { text('error', err.message); }
  });
}

start().catch((err) => text('error', err.message));
