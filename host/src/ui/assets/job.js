// /jobs/{id}: the job's facts, per-host results as hosts finish (GET /api/jobs/{id}/events), hosts grouped by
// identical output with folded host lists, its batches, where it came from (a re-run, a saved job) and its re-runs,
// and the cancel and re-run buttons (a re-run is confirmed with its hosts first).
import { api, describeRollout, el, foldHosts, utc } from '/assets/console.js';

const main = document.getElementById('main');
const id = main.dataset.jobId;
const latest = new Map(); // host → its newest result
let hosts = [];
let last = null; // the newest full view of the job

function text(idName, value) {
  document.getElementById(idName).textContent = value ?? '';
}

function jobLink(jobId) {
  return el('a', `job ${jobId}`, { href: `/jobs/${jobId}` });
}

async function showOrigin(job) {
  const box = document.getElementById('origin');
  box.replaceChildren();
  if (job.template_id !== null && job.template_id !== undefined) {
    // The saved job may have been renamed or deleted since: its name as it ran comes with the job.
    const name = job.template_definition?.name;
    box.append('saved job ', el('a', name ? `“${name}”` : `${job.template_id}`, { href: `/templates#template-${job.template_id}` }));
  }
  if (!job.rerun_of) {
    if (!box.childNodes.length) box.append('—');
    return;
  }
  if (box.childNodes.length) box.append('; ');
  box.append('re-run of ', jobLink(job.rerun_of));
  try {
    const origin = await api(`/api/jobs/${job.rerun_of}`);
    if (origin.module_version !== job.module_version) {
      box.append(el('span', ` (that job ran module version ${origin.module_version}; this one ran ${job.module_version})`,
        { class: 'note' }));
    }
  } catch (err) {
    box.append(el('span', ` (${err.message})`, { class: 'note' }));
  }
}

const hostCount = (n) => `${n} host${n === 1 ? '' : 's'}`;

function showBatches(job) {
  const list = document.getElementById('batches');
  list.replaceChildren();
  for (const b of job.batches || []) {
    const when = b.finished_at ? `${utc(b.started_at)} – ${utc(b.finished_at)}` : `${utc(b.started_at)}, running`;
    const li = el('li');
    li.append(el('span', foldHosts(b.hosts), { class: 'hosts' }), ` (${hostCount(b.hosts.length)}): ${when}`);
    list.append(li);
  }
  if (!list.children.length) list.append(el('li', 'none started yet'));
  // Hosts that never started (a threshold or a cancel stopped the rollout) belong to no batch.
  const skipped = (job.results || []).filter((r) => r.status === 'skipped').map((r) => r.host);
  const box = document.getElementById('not-started');
  box.replaceChildren();
  box.hidden = skipped.length === 0;
  if (skipped.length) {
    box.append('Not started: ', el('span', foldHosts(skipped), { class: 'hosts' }), ` (${hostCount(skipped.length)}, skipped)`);
  }
}

function showFacts(job) {
  text('status', job.status);
  text('module', `${job.module} (version ${job.module_version})`);
  text('backend', job.backend);
  text('created-by', job.created_by);
  text('rollout', describeRollout(job.rollout));
  text('error', job.error || '—');
  const reruns = document.getElementById('reruns');
  reruns.replaceChildren();
  (job.reruns || []).forEach((r, i) => reruns.append(...(i ? [', '] : []), jobLink(r)));
  if (!reruns.children.length) reruns.append('—');
  hosts = job.hosts || hosts;
  last = job;
  showBatches(job);
  const live = ['queued', 'running'].includes(job.status);
  // A finished job cannot be cancelled: the button goes rather than sit there greyed out.
  const cancelForm = document.getElementById('cancel-form');
  if (cancelForm) cancelForm.hidden = !live;
  const actions = document.getElementById('rerun-actions');
  if (actions) {
    actions.hidden = live;
    const notOk = (job.results || []).some((r) => r.status !== 'ok') || (job.results || []).length < hosts.length;
    document.getElementById('rerun-not-ok').disabled = !notOk;
  }
}

// Batches start and end between host events: refresh the facts at most every half second while results arrive.
let refresh = null;
function refreshSoon() {
  if (refresh) return;
  refresh = setTimeout(async () => {
    try { showFacts(await api(`/api/jobs/${id}`)); } catch { /* the next event or the end will tell */ }
    refresh = null;
  }, 500);
}

function render() {
  const counts = new Map();
  for (const r of latest.values()) counts.set(r.status, (counts.get(r.status) || 0) + 1);
  const tally = [...counts].map(([status, n]) => `${n} ${status}`).join(', ');
  text('progress', `${latest.size} of ${hosts.length || latest.size} reported${tally ? ` (${tally})` : ''}`);
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
    title.append(` — ${hostCount(g.hosts.length)}: `, el('span', g.result.status, { class: `badge ${g.result.status}` }), rc);
    section.append(title);
    if (g.result.stdout) section.append(el('pre', g.result.stdout, { class: 'stdout' }));
    if (g.result.stderr) section.append(el('pre', g.result.stderr, { class: 'stderr' }));
    box.append(section);
  }
}

async function start() {
  const job = await api(`/api/jobs/${id}`);
  showFacts(job);
  showOrigin(job);
  const events = new EventSource(`/api/jobs/${id}/events`);
  events.addEventListener('host', (e) => {
    const r = JSON.parse(e.data);
    latest.set(r.host, r);
    render();
    refreshSoon();
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

// A re-run is confirmed first, naming its hosts: the hosts of the job, or those without an ok result (the server
// picks them the same way).
let rerunWhich = null;

function askToRerun(which) {
  const job = last;
  if (!job) return;
  const ok = (host) => (job.results || []).some((r) => r.host === host && r.status === 'ok');
  const chosen = which === 'all' ? job.hosts : job.hosts.filter((h) => !ok(h));
  rerunWhich = which;
  text('rerun-title', which === 'all' ? 'Re-run on every host' : 'Re-run on the hosts not ok');
  text('rerun-summary', `Module ${job.module} again, with the same parameters, backend (${job.backend}) and rollout `
    + `(${describeRollout(job.rollout)}), on ${hostCount(chosen.length)}:`);
  text('rerun-hosts', foldHosts(chosen));
  const go = document.getElementById('rerun-go');
  go.textContent = `Re-run on ${hostCount(chosen.length)}`;
  go.disabled = false;
  document.getElementById('rerun-box').hidden = false;
  go.focus();
}

const rerunGo = document.getElementById('rerun-go');
if (rerunGo) {
  rerunGo.addEventListener('click', async () => {
    rerunGo.disabled = true;
    try {
      const answer = await api(`/api/jobs/${id}/rerun`, { method: 'POST', body: { hosts: rerunWhich } });
      window.location.assign(`/jobs/${answer.id}`);
    } catch (err) {
      document.getElementById('rerun-box').hidden = true;
      text('error', err.message);
    }
  });
  document.getElementById('rerun-back').addEventListener('click', () => {
    document.getElementById('rerun-box').hidden = true;
  });
  for (const [button, which] of [['rerun-all', 'all'], ['rerun-not-ok', 'not_ok']]) {
    document.getElementById(button).addEventListener('click', () => askToRerun(which));
  }
}

start().catch((err) => text('error', err.message));
