// /jobs: the history is rendered by the server; this keeps its queued and running jobs up to date (status, time
// taken, error) by asking for each one every 2 s while the page is visible, until none is left running.
import { api, el, statusBadge } from '/assets/console.js';

const LIVE = ['pending_approval', 'queued', 'running'];
// At most this many rows are followed: a page holds 50 jobs, and every one asked for is one request.
const FOLLOWED = 20;
const note = document.getElementById('live-note');

function liveRows() {
  return [...document.querySelectorAll('#history tbody tr[data-job]')]
    .filter((tr) => LIVE.includes(tr.dataset.status)).slice(0, FOLLOWED);
}

function took(job) {
  if (job.started_at === null || job.started_at === undefined) return '–';
  if (job.finished_at === null || job.finished_at === undefined) return 'running';
  return `${((job.finished_at - job.started_at) / 1000).toFixed(1)} s`;
}

function update(tr, job) {
  tr.dataset.status = job.status;
  const cell = tr.querySelector('td.status');
  cell.replaceChildren(statusBadge(job.status));
  if (job.error) cell.append(el('div', job.error, { class: 'muted error-text' }));
  tr.querySelector('td.took').textContent = took(job);
}

async function poll() {
  const rows = liveRows();
  if (!rows.length) {
    note.textContent = '';
    return;
  }
  note.textContent = `Following ${rows.length} running job${rows.length === 1 ? '' : 's'}: updated every 2 s.`;
  if (!document.hidden) {
    await Promise.all(rows.map(async (tr) => {
      try { update(tr, await api(`/api/jobs/${tr.dataset.job}`)); } catch { /* the next round asks again */ }
    }));
  }
  setTimeout(poll, 2000);
}

poll();
