// /templates: saved jobs. Everyone logged in reads the list; operators create, edit and delete them and run them.
// "Run now" first asks the server which hosts the targets match now (GET /api/templates/{id}/hosts) and shows them
// for confirmation. `/templates?from=JOB_ID` fills the form from that job. A 400 or 422 names a field (`{"error",
// "field"}`): its message is shown beside that input until the next save succeeds. Under each saved job, a row
// shows its schedules (schedules.js).
import { api, describeRollout, el, foldHosts, option, paramField, utc } from '/assets/console.js';
import { openEditor, scheduleRow, showSchedules, startSchedules, templateProblem } from '/assets/schedules.js';

const $ = (id) => document.getElementById(id);
const form = $('template-form'); // only operators get the form and the buttons
const canRun = $('main').dataset.canRun === 'true' && form !== null;
const KINDS = ['hosts', 'functions', 'apps', 'tags'];
let modules = []; // loaded modules
let hosts = []; // the inventory, for the form's target lists
let editId = null; // the saved job being edited; null: a new one
let running = null; // the saved job whose run is waiting for confirmation
const chosen = Object.fromEntries(KINDS.map((k) => [k, new Set()]));

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const fail = (err) => { $('problem').textContent = err.message; };

function moduleName(id) {
  const m = modules.find((x) => x.id === id);
  return m ? `${id} — ${m.name}` : `${id} (not loaded)`;
}

/** The targets in words, one line per kind. */
function targetLines(t) {
  const lines = [];
  if (t.hosts?.length) lines.push(`${t.hosts.length === 1 ? 'Host' : `${t.hosts.length} hosts`}: ${foldHosts(t.hosts)}`);
  if (t.functions?.length) lines.push(`Function categories: ${t.functions.join(', ')}`);
  if (t.apps?.length) lines.push(`App categories: ${t.apps.join(', ')}`);
  if (t.tags?.length) lines.push(`Tags: ${t.tags.join(', ')}`);
  return lines;
}

// ---- the list ----

function cell(label, ...content) {
  const td = el('td', undefined, { 'data-label': label });
  td.append(...content);
  return td;
}

function button(text, label, className, action) {
  const b = el('button', text, { type: 'button', class: className, 'aria-label': label });
  b.addEventListener('click', () => action(b).catch(fail));
  return b;
}

function row(t) {
  const tr = el('tr', undefined, { id: `template-${t.id}`, 'data-template': t.name });
  const name = cell('Name', el('strong', t.name, { class: 'name' }));
  if (t.description) name.append(el('div', t.description, { class: 'muted description' }));
  tr.append(
    name,
    cell('Module', moduleName(t.module)),
    cell('Targets', ...targetLines(t.targets).map((line) => el('div', line))),
    cell('Backend', t.backend ?? "the server's default"),
    cell('Rollout', describeRollout(t.rollout)),
    cell('Timeout', t.timeout_secs ? `${t.timeout_secs} s` : "the server's default"),
    cell('Updated', `${utc(t.updated_at)} by ${t.updated_by}`),
  );
  if (canRun) {
    const actions = el('div', undefined, { class: 'actions' });
    actions.append(
      button('Run now', `Run ${t.name} now`, 'run', () => askToRun(t)),
      button('Edit', `Edit ${t.name}`, 'edit secondary', async () => edit(t)),
      button('Add schedule', `Add a schedule to ${t.name}`, 'add-schedule secondary', async () => openEditor(t.id)),
      button('Delete', `Delete ${t.name}`, 'delete danger', async () => remove(t)),
    );
    tr.append(cell('Actions', actions));
  }
  return tr;
}

async function loadList() {
  const list = await api('/api/templates');
  const columns = $('templates').querySelectorAll('thead th').length;
  $('templates').querySelector('tbody').replaceChildren(...list.flatMap((t) => [row(t), scheduleRow(t, columns)]));
  $('empty').hidden = list.length > 0;
  $('templates').hidden = list.length === 0;
  showSchedules(list);
}

async function askToRun(t) {
  $('problem').textContent = '';
  const { hosts: matched } = await api(`/api/templates/${t.id}/hosts`);
  running = t;
  $('run-title').textContent = `Run “${t.name}” now`;
  const go = $('run-go');
  if (matched.length === 0) {
    $('run-summary').textContent = 'No host matches its targets now: there is nothing to run.';
    $('run-hosts').textContent = '';
    go.hidden = true;
  } else {
    const backend = t.backend ? `the ${t.backend} backend` : "the server's default backend";
    $('run-summary').textContent =
      `${moduleName(t.module)} on ${plural(matched.length, 'host')} through ${backend}, ${describeRollout(t.rollout)}:`;
    $('run-hosts').textContent = foldHosts(matched);
    go.textContent = `Run on ${plural(matched.length, 'host')}`;
    go.hidden = false;
    go.disabled = false;
  }
  $('run-box').hidden = false;
  $('run-box').scrollIntoView({ block: 'nearest' });
  (go.hidden ? $('run-back') : go).focus();
}

async function runConfirmed() {
  const go = $('run-go');
  go.disabled = true;
  try {
    const job = await api(`/api/templates/${running.id}/run`, { method: 'POST' });
    window.location.assign(`/jobs/${job.id}`);
  } catch (err) {
    $('run-box').hidden = true;
    fail(err);
  }
}

async function remove(t) {
  if (!window.confirm(`Delete the saved job “${t.name}”? The jobs it ran stay in the history.`)) return;
  try {
    await api(`/api/templates/${t.id}`, { method: 'DELETE' });
  } catch (err) {
    // 409 while schedules run it: said under it, beside those schedules.
    if (err.status === 409 && templateProblem(t.id, err.message)) return;
    throw err;
  }
  if (editId === t.id) clearForm();
  if (running?.id === t.id) $('run-box').hidden = true;
  await loadList();
}

// ---- the form ----

function checkbox(kind, index, value, text, checked, onChange) {
  const id = `t-${kind}-${index}`;
  const box = el('input', undefined, { type: 'checkbox', id, value });
  box.checked = checked;
  box.addEventListener('change', () => { onChange(box.checked); showMatches(); });
  const line = el('div', undefined, { class: 'host' });
  line.append(box, el('label', text, { for: id, class: 'inline' }));
  return line;
}

function toggle(kind, value) {
  return (on) => { if (on) chosen[kind].add(value); else chosen[kind].delete(value); };
}

const namesHost = (n, h) => n === h.name || n.toLowerCase() === h.name || n === h.ip;

/** The four target lists: what the inventory has, plus chosen entries it does not have (kept, and marked). */
function renderTargets() {
  const q = $('t-host-filter').value.trim().toLowerCase();
  const shown = hosts.filter((h) => !q || h.name.toLowerCase().includes(q) || h.ip.includes(q));
  const hostLines = shown.map((h, i) => {
    const where = [h.function, h.app].filter(Boolean).join(' / ');
    const text = `${h.name} (${h.ip})${where ? ` ${where}` : ''}${h.tags.length ? ` [${h.tags.join(', ')}]` : ''}`;
    const checked = [...chosen.hosts].some((n) => namesHost(n, h));
    // A host may be named by its address: unticking it drops either spelling.
    return checkbox('hosts', i, h.name, text, checked, (on) => {
      for (const n of [...chosen.hosts]) if (namesHost(n, h)) chosen.hosts.delete(n);
      if (on) chosen.hosts.add(h.name);
    });
  });
  const unknownHosts = [...chosen.hosts].filter((n) => !hosts.some((h) => namesHost(n, h)));
  hostLines.push(...unknownHosts.map((n, i) =>
    checkbox('hosts', `x${i}`, n, `${n} (not in the inventory)`, true, toggle('hosts', n))));
  $('t-hosts').replaceChildren(...(hostLines.length ? hostLines : [el('p', 'No host matches the filter.', { class: 'note' })]));

  const count = (values) => {
    const n = new Map();
    for (const v of values.filter(Boolean)) n.set(v, (n.get(v) || 0) + 1);
    return n;
  };
  for (const [kind, counts] of [
    ['functions', count(hosts.map((h) => h.function))],
    ['apps', count(hosts.map((h) => h.app))],
    ['tags', count(hosts.flatMap((h) => h.tags))],
  ]) {
    const values = [...new Set([...counts.keys(), ...chosen[kind]])].sort();
    const lines = values.map((v, i) => {
      const text = counts.has(v) ? `${v} (${plural(counts.get(v), 'host')})` : `${v} (no host now)`;
      return checkbox(kind, i, v, text, chosen[kind].has(v), toggle(kind, v));
    });
    $(`t-${kind}`).replaceChildren(...(lines.length ? lines : [el('p', 'None in the inventory.', { class: 'note' })]));
  }
  showMatches();
}

/** What the chosen targets match in the inventory as loaded (the run asks the server again). */
function showMatches() {
  const tags = new Set([...chosen.tags].map((t) => t.toLowerCase()));
  const matched = hosts.filter((h) => [...chosen.hosts].some((n) => namesHost(n, h))
    || chosen.functions.has(h.function) || chosen.apps.has(h.app) || h.tags.some((t) => tags.has(t.toLowerCase())));
  const none = KINDS.every((k) => chosen[k].size === 0);
  $('t-matches').textContent = none ? 'Nothing chosen yet.'
    : `Matches ${plural(matched.length, 'host')} now${matched.length ? `: ${foldHosts(matched.map((h) => h.name))}` : ''}.`;
}

function currentModule() {
  return modules.find((m) => String(m.id) === $('t-module').value);
}

/** The module's parameter inputs, filled from `values` (name → value); with `report`, names its schema lacks are
 * listed above the save button. */
function renderModule(values, report = false) {
  const m = currentModule();
  $('module-description').textContent = m ? m.description : '';
  $('params').replaceChildren(...(m ? m.params.map((p) => {
    const wrap = paramField(p);
    const slot = el('p', undefined, { class: 'field-error', id: `err-param-${p.name}` });
    wrap.querySelector('input, select').setAttribute('aria-describedby', slot.id);
    wrap.append(slot);
    return wrap;
  }) : []));
  const dropped = [];
  for (const [name, value] of Object.entries(values || {})) {
    const input = m && m.params.some((p) => p.name === name) ? $(`param-${name}`) : null;
    if (input) input.value = String(value);
    else dropped.push(name);
  }
  if (report && m && dropped.length) {
    $('form-problem').textContent = `Not in the module's parameters, left out: ${dropped.join(', ')}.`;
  }
}

/** The parameter values now in the form, by name (to keep them across a change of module). */
function paramValues() {
  const m = currentModule();
  const values = {};
  for (const p of m ? m.params : []) {
    const input = $(`param-${p.name}`);
    if (input && input.value !== '') values[p.name] = input.value;
  }
  return values;
}

function setSelect(select, value, missing) {
  if (value !== '' && ![...select.options].some((o) => o.value === value)) select.append(option(value, missing));
  select.value = value;
}

/** Puts a definition into the form: `id` null for a new saved job. */
function fill(spec, { id = null, title, note = '' }) {
  clearErrors();
  $('form-result').textContent = '';
  editId = id;
  $('t-name').value = spec.name ?? '';
  $('t-description').value = spec.description ?? '';
  const module = spec.module === undefined || spec.module === null ? '' : String(spec.module);
  setSelect($('t-module'), module, `${module} (not loaded)`);
  renderModule(spec.params, true);
  for (const kind of KINDS) chosen[kind] = new Set(spec.targets?.[kind] || []);
  $('t-host-filter').value = '';
  renderTargets();
  setSelect($('t-backend'), spec.backend ?? '', `${spec.backend} (not configured)`);
  const r = spec.rollout;
  $('t-batch').value = r ? String(r.batch) : '';
  $('t-max-failed').value = r && r.max_failed !== undefined && r.max_failed !== null ? String(r.max_failed) : '';
  $('t-pause').value = r && r.pause_secs ? String(r.pause_secs) : '';
  $('t-timeout').value = spec.timeout_secs ? String(spec.timeout_secs) : '';
  $('form-title').textContent = title;
  $('form-note').textContent = note;
  $('save').textContent = id === null ? 'Save' : 'Save changes';
}

function clearForm() {
  fill({ targets: {} }, { title: 'New saved job' });
}

function edit(t) {
  fill(t, {
    id: t.id,
    title: `Edit “${t.name}”`,
    note: `Created ${utc(t.created_at)} by ${t.created_by}. Jobs it already ran keep the definition they ran with.`,
  });
  $('editor').scrollIntoView({ block: 'start' });
  $('t-name').focus();
}

async function prefillFrom(jobId) {
  let job;
  try {
    job = await api(`/api/jobs/${encodeURIComponent(jobId)}`);
  } catch (err) {
    $('form-problem').textContent = `Job ${jobId}: ${err.message}`;
    return;
  }
  const spec = {
    name: '', description: `Saved from job ${job.id}.`, module: job.module, params: job.params,
    targets: { hosts: job.hosts }, backend: job.backend, rollout: job.rollout,
  };
  fill(spec, {
    title: `New saved job from job ${job.id}`,
    note: `Filled in from job ${job.id}: its module, parameters, hosts, backend and rollout. Name it, check it, save it.`,
  });
  $('editor').scrollIntoView({ block: 'start' });
  $('t-name').focus();
}

// Where a field's error goes: the request's own fields here, a module parameter beside its input.
const FIELDS = {
  name: 't-name', description: 't-description', module: 't-module', targets: null, 'targets.hosts': 't-host-filter',
  'targets.functions': null, 'targets.apps': null, 'targets.tags': null, backend: 't-backend', 'rollout.batch': 't-batch',
  'rollout.max_failed': 't-max-failed', 'rollout.pause_secs': 't-pause', timeout_secs: 't-timeout',
};

function clearErrors() {
  for (const slot of form.querySelectorAll('.field-error')) slot.textContent = '';
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  $('form-problem').textContent = '';
}

/** Shows `message` beside the input `field` names; false when no input fits (the caller shows it above the button). */
function showFieldError(field, message) {
  let slot = null, input = null;
  // A parameter's error reads "parameter NAME: …", the saved job's own "FIELD: …": that tells a parameter named
  // like one of the request's fields from the field.
  const param = message.startsWith(`parameter ${field}:`);
  const key = field === 'rollout' ? 'rollout.batch' : field;
  if (!param && Object.hasOwn(FIELDS, key)) {
    slot = $(`err-${key.replaceAll('.', '-')}`);
    input = FIELDS[key] && $(FIELDS[key]);
  } else if (currentModule()?.params.some((p) => p.name === field)) {
    slot = $(`err-param-${field}`);
    input = $(`param-${field}`);
  }
  if (!slot) return false;
  // Beside the field its name is noise (some messages carry it twice).
  let text = message;
  for (let again = true; again;) {
    again = false;
    for (const prefix of [`parameter ${field}: `, `${field}: `]) {
      if (text.startsWith(prefix)) { text = text.slice(prefix.length); again = true; }
    }
  }
  slot.textContent = text;
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  } else {
    slot.scrollIntoView({ block: 'nearest' });
  }
  return true;
}

/** A count or a percentage as the API takes it: whole numbers as numbers, the rest as written (the server checks). */
function amount(text) {
  return /^-?\d+$/.test(text) ? Number(text) : text.replace(/\s+/g, '');
}

/** The form as a request body; null (with the reason shown beside its field) when it cannot be one. */
function request() {
  const m = $('t-module').value;
  if (m === '') {
    showFieldError('module', 'Choose a module.');
    return null;
  }
  const body = { name: $('t-name').value, description: $('t-description').value, module: Number(m), params: {}, targets: {} };
  for (const p of currentModule()?.params || []) {
    const input = $(`param-${p.name}`);
    if (input.validity.badInput) {
      showFieldError(p.name, `parameter ${p.name}: must be a whole number`);
      return null;
    }
    if (input.value === '') continue;
    body.params[p.name] = p.type === 'integer' ? Number(input.value) : input.value;
  }
  for (const kind of KINDS) if (chosen[kind].size) body.targets[kind] = [...chosen[kind]];
  if ($('t-backend').value) body.backend = $('t-backend').value;
  const batch = $('t-batch').value.trim(), maxFailed = $('t-max-failed').value.trim(), pause = $('t-pause').value.trim();
  if (batch === '' && (maxFailed !== '' || pause !== '')) {
    showFieldError('rollout.batch', 'Needed when a threshold or a pause is set.');
    return null;
  }
  if (batch !== '') {
    body.rollout = { batch: amount(batch) };
    if (maxFailed !== '') body.rollout.max_failed = amount(maxFailed);
    if ($('t-pause').validity.badInput) {
      showFieldError('rollout.pause_secs', 'must be a whole number of seconds');
      return null;
    }
    if (pause !== '') body.rollout.pause_secs = Number(pause);
  }
  if ($('t-timeout').validity.badInput) {
    showFieldError('timeout_secs', 'must be a whole number of seconds');
    return null;
  }
  if ($('t-timeout').value !== '') body.timeout_secs = Number($('t-timeout').value);
  return body;
}

async function save(e) {
  e.preventDefault();
  clearErrors();
  $('form-result').textContent = '';
  const body = request();
  if (!body) return;
  $('save').disabled = true;
  try {
    let id = editId;
    if (id === null) ({ id } = await api('/api/templates', { method: 'POST', body }));
    else await api(`/api/templates/${id}`, { method: 'PUT', body });
    clearForm();
    $('form-result').textContent = `Saved “${body.name.trim()}”.`;
    // Saved: a reload must not fill the form from the job again.
    if (window.location.search) window.history.replaceState(null, '', '/templates');
    await loadList();
    const saved = $(`template-${id}`);
    if (saved) {
      saved.classList.add('highlight');
      saved.scrollIntoView({ block: 'center' });
    }
  } catch (err) {
    const field = err.status === 409 ? 'name' : err.field;
    if (!field || !showFieldError(field, err.message)) $('form-problem').textContent = err.message;
  } finally {
    $('save').disabled = false;
  }
}

async function startForm() {
  const [inventory, all, backends] = await Promise.all([api('/api/hosts'), api('/api/modules'), api('/api/backends')]);
  hosts = inventory;
  modules = all.filter((m) => m.status === 'loaded');
  $('t-module').append(...modules.map((m) => option(String(m.id), `${m.id} — ${m.name}`)));
  for (const b of backends) {
    $('t-backend').append(option(b.backend, `${b.backend}${b.default ? ' (default)' : ''}${b.ok ? '' : ' — unhealthy'}`));
  }
  $('t-module').addEventListener('change', () => renderModule(paramValues()));
  $('t-host-filter').addEventListener('input', renderTargets);
  $('new').addEventListener('click', () => {
    clearForm();
    if (window.location.search) window.history.replaceState(null, '', '/templates');
  });
  form.addEventListener('submit', save);
  clearForm();
  const from = new URLSearchParams(window.location.search).get('from');
  if (from) await prefillFrom(from);
}

async function start() {
  modules = (await api('/api/modules')).filter((m) => m.status === 'loaded');
  await loadList();
  startSchedules(canRun).catch(fail);
  // A job page links to the saved job it ran from as /templates#template-ID: the rows exist only now.
  const linked = window.location.hash && document.getElementById(window.location.hash.slice(1));
  if (linked) {
    linked.classList.add('highlight');
    linked.scrollIntoView({ block: 'center' });
  }
}

$('run-go').addEventListener('click', runConfirmed);
$('run-back').addEventListener('click', () => { $('run-box').hidden = true; running = null; });
// The list and the form load side by side: a slow backend health check must not hold up the list.
start().catch(fail);
if (form) startForm().catch((err) => { $('form-problem').textContent = err.message; });
