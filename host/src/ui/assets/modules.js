// /modules: GET /api/modules every two seconds, so a file dropped into or removed from plugins.d shows up by
// itself. Module names and descriptions come from libraries anyone may write: text only.
import { api, el } from '/assets/console.js';

const body = document.querySelector('#modules tbody');
let last = '';

function describe(p) {
  const parts = [`${p.name} (${p.type}${p.required ? ', required' : ''})`];
  if (p.min !== undefined) parts.push(`${p.min}…${p.max}`);
  if (p.choices) parts.push(p.choices.join(' | '));
  if (p.default !== undefined && p.default !== null) parts.push(`default ${p.default}`);
  if (p.description) parts.push(p.description);
  return parts.join(' · ');
}

async function refresh() {
  const modules = await api('/api/modules');
  const text = JSON.stringify(modules);
  if (text === last) return;
  last = text;
  body.replaceChildren(...modules.map((m) => {
    const tr = el('tr', undefined, { class: m.status, 'data-file': m.file });
    const params = el('td');
    for (const p of m.params) params.append(el('div', describe(p)));
    tr.append(el('td', m.file), el('td', m.status === 'loaded' ? 'loaded' : `rejected: ${m.error}`), el('td', m.id ?? ''),
      el('td', m.name ?? '', { class: 'name' }), el('td', m.version ?? ''),
      el('td', m.description ?? '', { class: 'description' }), params,
      el('td', m.backends.length ? m.backends.join(', ') : 'all'),
      // The servers of the database that load this very file (same content); one only where the database is not shared.
      el('td', (m.servers ?? []).join(', '), { class: 'servers' }));
    return tr;
  }));
}

function loop() {
  refresh()
    .then(() => { document.getElementById('problem').textContent = ''; })
    .catch((err) => { document.getElementById('problem').textContent = err.message; })
    .finally(() => setTimeout(loop, 2000));
}
loop();
