// The approval policies on /jobs: listed for everyone (GET /api/approval-policies); admins add one (each entry
// must name what exists: the server says which field is wrong, shown beside it) and delete one after a question.
import { api, clearFieldErrors, confirmInPlace, el, showFieldError } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const admin = $('main').dataset.admin === 'true';
const words = (id, sep) => $(id).value.split(sep).map((w) => w.trim()).filter(Boolean);

/** What a policy holds, in words: `module 1005, saved job 3 on function Linux.DB, tag prod`. */
function holds(p) {
  const what = [...p.modules.map((m) => `module ${m}`), ...p.templates.map((t) => `saved job ${t}`)];
  const where = [...p.functions.map((f) => `function ${f}`), ...p.apps.map((a) => `app ${a}`), ...p.tags.map((t) => `tag ${t}`)];
  return `${what.length ? what.join(', ') : 'any module'} on ${where.length ? where.join(', ') : 'any host'}`;
}

function every(secs) {
  if (secs % 86400 === 0) return `${secs / 86400} day${secs === 86400 ? '' : 's'}`;
  if (secs % 3600 === 0) return `${secs / 3600} h`;
  if (secs % 60 === 0) return `${secs / 60} min`;
  return `${secs} s`;
}

function row(p) {
  const tr = el('tr', undefined, { 'data-policy': String(p.id) });
  tr.append(el('td', p.name, { 'data-label': 'Name' }), el('td', holds(p), { 'data-label': 'Jobs it holds' }),
    el('td', every(p.expire_secs), { 'data-label': 'Expires after' }),
    el('td', p.exempt_schedules ? 'run at once' : 'wait too', { 'data-label': "Schedules' runs" }));
  const action = el('td', undefined, { 'data-label': 'Action' });
  if (admin) {
    const del = el('button', `Delete ${p.name}`, { type: 'button', class: 'danger' });
    del.addEventListener('click', () => confirmInPlace(del, `Delete policy ${p.name}?`, `Yes, delete ${p.name}`, async () => {
      try { await api(`/api/approval-policies/${p.id}`, { method: 'DELETE' }); await load(); } catch (err) { $('policies-problem').textContent = err.message; }
    }));
    action.append(del);
  }
  tr.append(action);
  return tr;
}

async function load() {
  try {
    const policies = await api('/api/approval-policies');
    $('policies').tBodies[0].replaceChildren(...policies.map(row));
    $('policies-empty').hidden = policies.length > 0;
    $('policies-problem').textContent = '';
  } catch (err) {
    $('policies-problem').textContent = err.message;
  }
}

const form = $('policy-form');
if (form) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const numbers = (id) => words(id, /\s+/).map(Number);
    const body = {
      name: $('p-name').value,
      modules: numbers('p-modules'),
      templates: numbers('p-templates'),
      functions: words('p-functions', ','),
      apps: words('p-apps', ','),
      tags: words('p-tags', /\s+/),
      expire_secs: Number($('p-expire').value) * 60,
      exempt_schedules: $('p-exempt').checked,
    };
    const fields = { name: 'p-name', modules: 'p-modules', templates: 'p-templates', functions: 'p-functions',
      apps: 'p-apps', tags: 'p-tags', expire_secs: 'p-expire' };
    try {
      await api('/api/approval-policies', { method: 'POST', body });
      clearFieldErrors(form);
      form.reset();
      await load();
    } catch (err) {
      showFieldError(form, fields, err, $('policies-problem'));
    }
  });
}

load();
