// /inventory: hosts under the original's three levels (function category → app category → host) plus free
// tags; admins add, edit and delete hosts, and import CSV or Ansible INI after a preview that names every bad line.
import { api, clearFieldErrors, confirmInPlace, el, showFieldError } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const admin = $('main').dataset.admin === 'true';
const fail = (err) => { $('problem').textContent = err.message; };
let hosts = [];

function hostLine(h) {
  const li = el('li', undefined, { 'data-host': h.name });
  li.append(el('span', `${h.name} (${h.ip})`, { class: 'hosts' }));
  if (h.tags.length) li.append(el('span', ` ${h.tags.map((t) => `#${t}`).join(' ')}`, { class: 'tags' }));
  if (admin) {
    const edit = el('button', `Edit ${h.name}`, { type: 'button' });
    edit.addEventListener('click', () => fill(h));
    const del = el('button', `Delete ${h.name}`, { type: 'button', class: 'danger' });
    del.addEventListener('click', () => confirmInPlace(del, `Delete ${h.name}?`, `Yes, delete ${h.name}`, async () => {
      try { await api(`/api/hosts/${h.id}`, { method: 'DELETE' }); $('problem').textContent = ''; await load(); } catch (err) { fail(err); }
    }));
    li.append(' ', edit, ' ', del);
  }
  return li;
}

function render() {
  const tag = $('tag-filter').value;
  const shown = hosts.filter((h) => !tag || h.tags.includes(tag));
  const tree = new Map();
  for (const h of shown) {
    const fn = h.function || '(no category)', app = h.app || '(no category)';
    if (!tree.has(fn)) tree.set(fn, new Map());
    if (!tree.get(fn).has(app)) tree.get(fn).set(app, []);
    tree.get(fn).get(app).push(h);
  }
  const box = $('tree');
  box.replaceChildren();
  for (const [fn, apps] of [...tree].sort(([a], [b]) => a.localeCompare(b))) {
    const fnBox = el('details', undefined, { open: '', 'data-function': fn });
    fnBox.append(el('summary', fn));
    for (const [app, list] of [...apps].sort(([a], [b]) => a.localeCompare(b))) {
      const appBox = el('details', undefined, { open: '', 'data-app': app });
      appBox.append(el('summary', `${app} (${list.length})`));
      const ul = el('ul');
      ul.append(...list.map(hostLine));
      appBox.append(ul);
      fnBox.append(appBox);
    }
    box.append(fnBox);
  }
  if (!shown.length) box.append(el('p', 'No hosts.'));
}

async function load() {
  hosts = await api('/api/hosts');
  const tags = [...new Set(hosts.flatMap((h) => h.tags))].sort();
  const current = $('tag-filter').value;
  $('tag-filter').replaceChildren(el('option', 'any tag', { value: '' }), ...tags.map((t) => el('option', t, { value: t })));
  if (tags.includes(current)) $('tag-filter').value = current;
  render();
}

function fill(h) {
  $('form-title').textContent = `Edit ${h.name}`;
  $('h-id').value = h.id;
  for (const [id, value] of [['h-name', h.name], ['h-ip', h.ip], ['h-wan', h.wan_ip], ['h-function', h.function],
    ['h-app', h.app], ['h-port', h.port], ['h-user', h.user], ['h-tags', h.tags.join(' ')]]) $(id).value = value ?? '';
  $('h-name').focus();
}

function clear() {
  $('form-title').textContent = 'Add a host';
  $('host-form').reset();
  $('h-id').value = '';
}

// The API's field names (`HttpError::invalid`) and the form's inputs.
const HOST_FIELDS = { name: 'h-name', ip: 'h-ip', wan_ip: 'h-wan', function: 'h-function', app: 'h-app', port: 'h-port',
  user: 'h-user', tags: 'h-tags' };

function optional(id) { const v = $(id).value.trim(); return v === '' ? undefined : v; }

async function save(e) {
  e.preventDefault();
  const body = { name: $('h-name').value.trim(), ip: $('h-ip').value.trim(), wan_ip: optional('h-wan'),
    function: optional('h-function'), app: optional('h-app'), user: optional('h-user'),
    port: optional('h-port') === undefined ? undefined : Number($('h-port').value),
    tags: $('h-tags').value.split(/\s+/).filter(Boolean) };
  try {
    const id = $('h-id').value;
    await api(id ? `/api/hosts/${id}` : '/api/hosts', { method: id ? 'PUT' : 'POST', body });
    $('problem').textContent = '';
    clearFieldErrors($('host-form'));
    clear();
    await load();
  } catch (err) { showFieldError($('host-form'), HOST_FIELDS, err, $('problem')); }
}

async function importFile(preview) {
  const report = await api('/api/hosts/import', { method: 'POST', body: { format: $('i-format').value, text: $('i-text').value, preview } });
  const body = $('import-lines').querySelector('tbody');
  body.replaceChildren(...report.lines.map((l) => {
    const tr = el('tr', undefined, { class: l.error ? 'failed' : 'ok', 'data-line': String(l.line) });
    const result = l.error ? `error: ${l.error}` : (l.imported ? 'imported' : 'ready');
    tr.append(el('td', l.line), el('td', l.name ?? ''), el('td', l.ip ?? ''),
      el('td', [l.function, l.app].filter(Boolean).join(' / ')), el('td', l.tags.join(' ')), el('td', result, { class: 'result' }));
    return tr;
  }));
  $('import-lines').hidden = false;
  const good = report.lines.length - report.failed;
  $('import-summary').textContent = preview
    ? `${good} lines ready, ${report.failed} with errors.`
    : `${report.imported} hosts imported, ${report.failed} lines not imported.`;
  $('do-import').hidden = !preview || good === 0;
  if (!preview) await load();
}

$('tag-filter').addEventListener('change', render);
if (admin) {
  $('admin-box').hidden = false;
  $('host-form').addEventListener('submit', save);
  $('new-host').addEventListener('click', clear);
  $('import-form').addEventListener('submit', (e) => { e.preventDefault(); importFile(true).catch(fail); });
  $('do-import').addEventListener('click', () => importFile(false).catch(fail));
  $('i-file').addEventListener('change', async () => {
    const file = $('i-file').files[0];
    if (file) $('i-text').value = await file.text();
  });
}
load().catch(fail);
