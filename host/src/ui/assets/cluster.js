// /cluster: the servers of this database (GET /api/cluster), redrawn every 5 s. Every value is shown as text.
import { api, el, utc, duration } from '/assets/console.js';

const $ = (id) => document.getElementById(id);

function jobsCell(server) {
  const td = el('td', undefined, { 'data-label': 'Running jobs' });
  td.append(String(server.running_jobs));
  for (const id of server.jobs) {
    td.append(' ', el('a', `#${id}`, { href: `/jobs/${id}` }));
  }
  return td;
}

function line(server, now) {
  const tr = el('tr', undefined, { 'data-name': server.name });
  const name = el('td', server.name, { 'data-label': 'Server' });
  if (server.this) name.append(' ', el('span', '(this server)', { class: 'muted' }));
  const state = el('td', undefined, { 'data-label': 'State' });
  state.append(el('span', server.up ? 'up' : 'silent', { class: `badge ${server.up ? 'ok' : 'failed'}` }));
  tr.append(
    name,
    state,
    el('td', server.address, { 'data-label': 'Address' }),
    el('td', server.version, { 'data-label': 'Version' }),
    el('td', utc(server.started_at), { 'data-label': 'Started' }),
    el('td', `${duration(Math.max(0, now - server.last_seen_at))} ago`, { 'data-label': 'Last heartbeat' }),
    jobsCell(server),
  );
  return tr;
}

async function load() {
  try {
    const servers = await api('/api/cluster');
    $('problem').textContent = '';
    const now = Date.now();
    $('servers').tBodies[0].replaceChildren(...servers.map((s) => line(s, now)));
  } catch (err) {
    $('problem').textContent = err.message;
  }
}

load();
setInterval(load, 5000);
