// /jobs/{id}: the job's facts (module by name, parameters, who or which schedule, times), per-host results as hosts
// finish (GET /api/jobs/{id}/events), a bar of counts by host status, hosts grouped by identical output with folded
// host lists (a host's own name and address in its output count as the same text), "only hosts not ok", each
// host's duration, the output copied or downloaded as text or JSON, its batches, where it came from (a re-run, a
// saved job) and its re-runs, and the cancel and re-run buttons (a re-run is confirmed with its hosts first).
import { api, describeRollout, duration, el, foldHosts, statusBadge, utc } from '/assets/console.js';

const main = document.getElementById('main');
const id = main.dataset.jobId;
const latest = new Map(); // host → its newest result
let hosts = [];
let last = null; // the newest full view of the job
const moduleNames = new Map(); // module id → name, from GET /api/modules
const addresses = new Map(); // inventory host name → its address, from GET /api/hosts
// Host statuses in the order the bar and the legend show them.
const STATUSES = ['ok', 'failed', 'unreachable', 'lost', 'cancelled', 'skipped'];

/** Module names and host addresses: nice to have, so a failure leaves ids and names without addresses. */
async function loadNames() {
  const [modules, inventory] = await Promise.allSettled([api('/api/modules'), api('/api/hosts')]);
  if (modules.status === 'fulfilled') {
    for (const m of modules.value) if (m.id !== null && m.id !== undefined && m.name) moduleNames.set(m.id, m.name);
  }
  if (inventory.status === 'fulfilled') for (const h of inventory.value) addresses.set(h.name, h.ip);
}

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

function showParams(params) {
  const box = document.getElementById('params');
  box.replaceChildren();
  const entries = Object.entries(params || {});
  if (!entries.length) { box.append('none'); return; }
  const list = el('ul', undefined, { class: 'plain-list' });
  for (const [name, value] of entries) {
    const li = el('li');
    li.append(el('code', name), ' = ', el('code', typeof value === 'string' ? value : JSON.stringify(value)));
    list.append(li);
  }
  box.append(list);
}

/** A person's name, or the schedule (and saved job) a fire came from: `schedule:NAME` in `created_by`. */
function whoStarted(job) {
  const box = document.getElementById('created-by');
  box.replaceChildren();
  if (job.created_by.startsWith('schedule:')) {
    box.append('schedule “', el('span', job.created_by.slice('schedule:'.length)), '”');
    if (job.template_id !== null && job.template_id !== undefined) {
      box.append(' of ', el('a', job.template_definition?.name ? `saved job “${job.template_definition.name}”` : `saved job ${job.template_id}`,
        { href: `/templates#template-${job.template_id}` }));
    }
  } else {
    // A user's name, or an API token's (whoever the request's credentials named).
    box.append(el('span', job.created_by));
  }
}

function showTimes(job) {
  text('created', utc(job.created_at));
  text('started', job.started_at ? utc(job.started_at) : 'not yet');
  text('ended', job.finished_at ? utc(job.finished_at) : (job.started_at ? 'still running' : '—'));
  if (job.started_at && job.finished_at) text('duration', duration(job.finished_at - job.started_at));
  else if (job.started_at) text('duration', `${duration(Date.now() - job.started_at)} so far`);
  else text('duration', '—');
}

function showFacts(job) {
  const status = document.getElementById('status');
  status.replaceChildren(statusBadge(job.status));
  const name = moduleNames.get(job.module);
  text('module', `${name ? `${name} (module ${job.module}` : `module ${job.module} (`}${name ? ', ' : ''}version ${job.module_version})`);
  showParams(job.params);
  text('backend', job.backend);
  whoStarted(job);
  showTimes(job);
  text('rollout', describeRollout(job.rollout));
  text('error', job.error || '—');
  showApproval(job);
  const reruns = document.getElementById('reruns');
  reruns.replaceChildren();
  (job.reruns || []).forEach((r, i) => reruns.append(...(i ? [', '] : []), jobLink(r)));
  if (!reruns.children.length) reruns.append('—');
  hosts = job.hosts || hosts;
  last = job;
  showBatches(job);
  // A job waiting for approval can be cancelled too: it is withdrawn and never runs.
  const live = ['pending_approval', 'queued', 'running'].includes(job.status);
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

const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `text` with the host's own name and address replaced by `{host}`: five hosts that each say
 * "127.0.0.N: not a loopback address" then say the same thing. Only whole names count (not 127.0.0.2 in 127.0.0.25).
 */
function generic(text, host) {
  if (!text) return text;
  const own = [host, addresses.get(host)].filter(Boolean).sort((a, b) => b.length - a.length).map(escapeRe);
  return text.replace(new RegExp(`(?<![\\w.-])(?:${own.join('|')})(?![\\w-]|\\.\\w)`, 'g'), '{host}');
}

/** The results grouped by status, exit code and output (each host's own name and address made generic). */
function groups() {
  const found = new Map();
  for (const r of latest.values()) {
    const stdout = generic(r.stdout, r.host), stderr = generic(r.stderr, r.host);
    const key = JSON.stringify([r.status, r.rc, stdout, stderr]);
    if (!found.has(key)) found.set(key, { result: r, stdout, stderr, hosts: [] });
    found.get(key).hosts.push(r.host);
  }
  return [...found.values()].sort((a, b) => b.hosts.length - a.hosts.length);
}

/** A group's output as shown: the host's own text when it is alone, the generic text when it stands for several. */
const shownOutput = (g) => (g.hosts.length > 1 ? { stdout: g.stdout, stderr: g.stderr } : g.result);

function showCounts() {
  const counts = new Map();
  for (const r of latest.values()) counts.set(r.status, (counts.get(r.status) || 0) + 1);
  const tally = [...counts].map(([status, n]) => `${n} ${status}`).join(', ');
  const total = hosts.length || latest.size;
  text('progress', `${latest.size} of ${total} reported${tally ? ` (${tally})` : ''}`);
  const bar = document.getElementById('count-bar');
  const legend = document.getElementById('count-legend');
  bar.replaceChildren();
  legend.replaceChildren();
  const parts = [...STATUSES.filter((s) => counts.has(s)), ...[...counts.keys()].filter((s) => !STATUSES.includes(s))]
    .map((s) => [s, counts.get(s)]);
  const pending = Math.max(0, total - latest.size);
  if (pending) parts.push(['pending', pending]);
  for (const [status, n] of parts) {
    const part = el('span', undefined, { class: status });
    // Through the CSSOM: the Content-Security-Policy refuses style attributes, not this.
    part.style.flexGrow = String(n);
    bar.append(part);
    const li = el('li', undefined, { 'data-status': status });
    li.append(el('span', undefined, { class: `swatch ${status}`, 'aria-hidden': 'true' }), `${n} ${status}`);
    legend.append(li);
  }
  bar.setAttribute('aria-label', parts.length ? `hosts by status: ${parts.map(([s, n]) => `${n} ${s}`).join(', ')}` : 'no host yet');
}

function render() {
  showCounts();
  const onlyNotOk = document.getElementById('only-not-ok').checked;
  const box = document.getElementById('groups');
  box.replaceChildren();
  for (const g of groups()) {
    if (onlyNotOk && g.result.status === 'ok') continue;
    const section = el('section', undefined, { class: `group ${g.result.status}` });
    const title = el('h3', undefined);
    title.append(el('span', foldHosts(g.hosts), { class: 'hosts' }));
    const rc = g.result.rc === null || g.result.rc === undefined ? '' : `, rc ${g.result.rc}`;
    title.append(` — ${hostCount(g.hosts.length)}: `, statusBadge(g.result.status), rc);
    section.append(title);
    const out = shownOutput(g);
    if (out.stdout) section.append(el('pre', out.stdout, { class: 'stdout' }));
    if (out.stderr) section.append(el('pre', out.stderr, { class: 'stderr' }));
    box.append(section);
  }
  if (!box.children.length && latest.size) box.append(el('p', 'Every host that reported is ok.', { class: 'note' }));
  const rows = [...latest.values()].filter((r) => !onlyNotOk || r.status !== 'ok')
    .sort((a, b) => a.host.localeCompare(b.host));
  document.querySelector('#host-table tbody').replaceChildren(...rows.map((r) => {
    const tr = el('tr', undefined, { 'data-host': r.host });
    const status = el('td', undefined, { 'data-label': 'Status' });
    status.append(statusBadge(r.status));
    tr.append(el('td', r.host, { 'data-label': 'Host', class: 'hosts' }), status,
      el('td', r.rc ?? '–', { 'data-label': 'Exit code' }), el('td', duration(r.duration_ms), { 'data-label': 'Duration', class: 'duration' }));
    return tr;
  }));
}

/** The whole output as text: the job's facts, then each group with its hosts (whatever the filter shows). */
function outputText() {
  const job = last;
  const lines = [];
  if (job) {
    const name = moduleNames.get(job.module);
    lines.push(`Job ${job.id}: module ${job.module}${name ? ` ${name}` : ''} version ${job.module_version}, backend ${job.backend}, ${job.status}`);
    lines.push(`Parameters: ${JSON.stringify(job.params)}`);
    lines.push(`Started by ${job.created_by}; created ${utc(job.created_at)}${job.started_at ? `, started ${utc(job.started_at)}` : ''}`
      + `${job.finished_at ? `, ended ${utc(job.finished_at)}` : ''}`);
  }
  for (const g of groups()) {
    const rc = g.result.rc === null || g.result.rc === undefined ? '' : `, rc ${g.result.rc}`;
    const out = shownOutput(g);
    lines.push('', `== ${foldHosts(g.hosts)} (${hostCount(g.hosts.length)}): ${g.result.status}${rc}`);
    if (out.stdout) lines.push(out.stdout.replace(/\n$/, ''));
    if (out.stderr) lines.push('-- stderr', out.stderr.replace(/\n$/, ''));
  }
  return `${lines.join('\n')}\n`;
}

/** The whole output as JSON: the job's facts and every host's own result, unchanged. */
function outputJson() {
  const job = last || {};
  const results = [...latest.values()].sort((a, b) => a.host.localeCompare(b.host))
    .map(({ host, status, rc, stdout, stderr, duration_ms }) => ({ host, status, rc, stdout, stderr, duration_ms }));
  const facts = {
    id: job.id, module: job.module, module_name: moduleNames.get(job.module) ?? null, module_version: job.module_version,
    backend: job.backend, params: job.params, status: job.status, created_by: job.created_by, created_at: job.created_at,
    started_at: job.started_at, finished_at: job.finished_at, error: job.error,
  };
  return `${JSON.stringify({ job: facts, results }, null, 2)}\n`;
}

async function copy(kind) {
  const state = document.getElementById('copy-state');
  try {
    await navigator.clipboard.writeText(kind === 'json' ? outputJson() : outputText());
    state.textContent = `Copied ${hostCount(latest.size)}' output as ${kind === 'json' ? 'JSON' : 'text'}.`;
  } catch (err) {
    state.textContent = `Could not copy (${err.message}): use the download instead.`;
  }
}

// A download link gets a fresh blob at each click (the output may have grown since), the old one released.
const blobs = new Map();
function prepareDownload(link, kind) {
  if (blobs.has(kind)) URL.revokeObjectURL(blobs.get(kind));
  const body = kind === 'json' ? outputJson() : outputText();
  const url = URL.createObjectURL(new Blob([body], { type: kind === 'json' ? 'application/json' : 'text/plain' }));
  blobs.set(kind, url);
  link.href = url;
  link.download = `job-${id}.${kind === 'json' ? 'json' : 'txt'}`;
}

document.getElementById('only-not-ok').addEventListener('change', render);
document.getElementById('copy-text').addEventListener('click', () => copy('text'));
document.getElementById('copy-json').addEventListener('click', () => copy('json'));
for (const [linkId, kind] of [['download-text', 'text'], ['download-json', 'json']]) {
  const link = document.getElementById(linkId);
  link.addEventListener('click', () => prepareDownload(link, kind));
}

/** Who asked under which policy, until when, and the decision once made. */
function describeApproval(a) {
  if (!a) return '—';
  const asked = `policy “${a.policy}”, asked by ${a.requested_by} at ${utc(a.requested_at)}`;
  if (!a.decision) return `${asked}; waits until ${utc(a.expires_at)}`;
  const by = a.decided_by && a.decision !== 'expired' ? ` by ${a.decided_by}` : '';
  const why = a.comment ? `: ${a.comment}` : '';
  return `${asked}; ${a.decision}${by} at ${utc(a.decided_at)}${why}`;
}

function showApproval(job) {
  text('approval', describeApproval(job.approval));
  const box = document.getElementById('approval-box');
  if (!box) return;
  const waiting = job.status === 'pending_approval';
  box.hidden = !waiting;
  if (waiting) {
    text('approval-summary', `${describeApproval(job.approval)}. Another operator whose grants cover its hosts decides; its requester cannot.`);
  }
}

async function decide(decision) {
  const comment = document.getElementById('approval-comment').value;
  for (const b of ['approve', 'reject']) document.getElementById(b).disabled = true;
  try {
    await api(`/api/jobs/${id}/${decision}`, { method: 'POST', body: { comment } });
    text('approval-problem', '');
    watch(await api(`/api/jobs/${id}`));
  } catch (err) {
    text('approval-problem', err.message);
  } finally {
    for (const b of ['approve', 'reject']) document.getElementById(b).disabled = false;
  }
}

// While a job waits for approval there is nothing to stream: its status is read every two seconds, and once it is
// decided (here, by someone else, or by expiry) the stream of its hosts starts.
let waitingPoll = null;
function watch(job) {
  showFacts(job);
  if (job.status === 'pending_approval') {
    waitingPoll = waitingPoll || setInterval(async () => {
      try {
        const now = await api(`/api/jobs/${id}`);
        if (now.status !== 'pending_approval') watch(now); else showFacts(now);
      } catch { /* the next poll will tell */ }
    }, 2000);
    return;
  }
  if (waitingPoll) { clearInterval(waitingPoll); waitingPoll = null; }
  stream();
}

for (const [buttonId, decision] of [['approve', 'approve'], ['reject', 'reject']]) {
  const button = document.getElementById(buttonId);
  if (button) button.addEventListener('click', () => decide(decision));
}

async function start() {
  await loadNames();
  const job = await api(`/api/jobs/${id}`);
  showOrigin(job);
  watch(job);
}

let streaming = false;
function stream() {
  if (streaming) return;
  streaming = true;
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
