// /run: pick hosts (function category → app category → hosts, a tag, a text filter), a module, its parameters (a
// form built from the module's schema, checked here and again by the server), a backend; confirm with the host
// count; then go to the job's page.
import { api, clearFieldErrors, el, option, paramField, showFieldError } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
let hosts = [];
let modules = [];
const chosen = new Set();

function visibleHosts() {
  const fn = $('function').value, app = $('app').value, tag = $('tag').value;
  const q = $('host-filter').value.trim().toLowerCase();
  return hosts.filter((h) => (!fn || h.function === fn) && (!app || h.app === app) && (!tag || h.tags.includes(tag))
    && (!q || h.name.toLowerCase().includes(q) || h.ip.includes(q)));
}

function renderHosts() {
  const fn = $('function').value;
  const apps = [...new Set(hosts.filter((h) => !fn || h.function === fn).map((h) => h.app).filter(Boolean))].sort();
  const current = $('app').value;
  $('app').replaceChildren(option('', 'All'), ...apps.map((a) => option(a, a)));
  if (apps.includes(current)) $('app').value = current;
  const list = $('host-list');
  list.replaceChildren(...visibleHosts().map((h) => {
    const id = `host-${h.id}`;
    const box = el('input', undefined, { type: 'checkbox', id, value: h.name });
    box.checked = chosen.has(h.name);
    box.addEventListener('change', () => { if (box.checked) chosen.add(h.name); else chosen.delete(h.name); });
    const tags = h.tags.length ? ` [${h.tags.join(', ')}]` : '';
    const label = el('label', `${h.name} (${h.ip})${tags}`, { for: id, class: 'inline' });
    const row = el('div', undefined, { class: 'host' });
    row.append(box, label);
    return row;
  }));
}

function renderModule() {
  const m = modules.find((x) => String(x.id) === $('module').value);
  $('module-description').textContent = m ? m.description : '';
  $('params').replaceChildren(...(m ? m.params.map(paramField) : []));
}

/** An error about one field of the request, shown beside its input like the server's 400s and 422s. */
function fieldError(field, message) {
  const err = new Error(message);
  err.field = field;
  return err;
}

/** The request's fields (the server's names) and the inputs that show their errors. */
function inputs() {
  const m = modules.find((x) => String(x.id) === $('module').value);
  const map = { module: 'module', hosts: 'host-filter', backend: 'backend' };
  for (const p of m ? m.params : []) map[p.name] = `param-${p.name}`;
  return map;
}

function request() {
  const m = modules.find((x) => String(x.id) === $('module').value);
  if (!m) throw fieldError('module', 'Choose a module.');
  if (chosen.size === 0) throw fieldError('hosts', 'Choose at least one host.');
  const params = {};
  for (const p of m.params) {
    const input = document.getElementById(`param-${p.name}`);
    if (!input.checkValidity()) throw fieldError(p.name, input.validationMessage);
    if (input.value === '') continue;
    params[p.name] = p.type === 'integer' ? Number(input.value) : input.value;
  }
  return { module: m.id, hosts: [...chosen], params, backend: $('backend').value || undefined, name: m.name };
}

async function start() {
  [hosts, modules] = await Promise.all([api('/api/hosts'), api('/api/modules')]);
  modules = modules.filter((m) => m.status === 'loaded');
  const backends = await api('/api/backends');
  const functions = [...new Set(hosts.map((h) => h.function).filter(Boolean))].sort();
  $('function').append(...functions.map((f) => option(f, f)));
  const tags = [...new Set(hosts.flatMap((h) => h.tags))].sort();
  $('tag').append(...tags.map((t) => option(t, t)));
  $('module').append(...modules.map((m) => option(String(m.id), `${m.id} — ${m.name}`)));
  for (const b of backends) {
    const o = option(b.backend, `${b.backend}${b.default ? ' (default)' : ''}${b.ok ? '' : ' — unhealthy'}`);
    $('backend').append(o);
    if (b.default) $('backend').value = b.backend;
  }
  renderHosts();
}

for (const id of ['function', 'app', 'tag']) $(id).addEventListener('change', renderHosts);
$('host-filter').addEventListener('input', renderHosts);
$('select-visible').addEventListener('click', () => { for (const h of visibleHosts()) chosen.add(h.name); renderHosts(); });
$('select-none').addEventListener('click', () => { chosen.clear(); renderHosts(); });
$('module').addEventListener('change', renderModule);
$('run-form').addEventListener('submit', (e) => {
  e.preventDefault();
  $('problem').textContent = '';
  try {
    const r = request();
    clearFieldErrors($('run-form'));
    $('summary').textContent = `Run ${r.module} (${r.name}) on ${r.hosts.length} host${r.hosts.length === 1 ? '' : 's'} through ${$('backend').value}?`;
    $('run').textContent = `Run on ${r.hosts.length} host${r.hosts.length === 1 ? '' : 's'}`;
    $('confirm').hidden = false;
    $('run').focus();
  } catch (err) { showFieldError($('run-form'), inputs(), err, $('problem')); }
});
$('back').addEventListener('click', () => { $('confirm').hidden = true; });
$('run').addEventListener('click', async () => {
  $('run').disabled = true;
  try {
    const { name, ...body } = request();
    const job = await api('/api/jobs', { method: 'POST', body });
    window.location.assign(`/jobs/${job.id}`);
  } catch (err) {
    showFieldError($('run-form'), inputs(), err, $('problem'));
    $('confirm').hidden = true;
    $('run').disabled = false;
  }
});

start().catch((err) => { $('problem').textContent = err.message; });
