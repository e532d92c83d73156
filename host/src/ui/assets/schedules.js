// The schedules part of /templates: under each saved job, a row with its schedules (timing, state, overlap rule,
// the next 5 fire times and the last fires). Operators add one to a saved job, edit, pause or resume (a PUT of the
// whole definition with `enabled` flipped) and delete them; one editor form moves into the saved job it is open
// for. While the page is visible the schedules and their last fires are fetched again every few seconds (one
// GET /api/schedules, and the last 10 fires of each schedule shown; a paused one only now and then), and only the
// parts that changed are redrawn, so focus stays where it is.
import { api, el, utc } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const editor = $('schedule-editor'); // operators only
const POLL_MS = 3000;
const FIRES = 10;
/** A paused schedule does not fire: its fires are fetched again only this often, and during this long after it
 * changed (a fire claimed just before the pause is still recorded). */
const PAUSED_FIRES_MS = 30_000;
const CHANGED_MS = 10_000;
const OUTCOMES = new Set(['fired', 'skipped', 'missed', 'failed', 'queued', 'claimed']);
const WAITING = new Set(['queued', 'claimed']);
const FIELDS = { name: 's-name', cron: 's-cron', timezone: 's-timezone', overlap: 's-overlap', catch_up_secs: 's-catch-up' };

/** The browser's own time zone, the default for a new schedule. */
const browserZone = (() => {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
})();

let canRun = false;
let templates = []; // the saved jobs listed, each with a schedules row
let schedules = []; // GET /api/schedules as last shown
const fires = new Map(); // schedule id → its last fires, newest first
const firesAt = new Map(); // schedule id → when they were fetched (ms, this browser's clock)
const changed = new Map(); // schedule id → [its version, when this page first saw it]
let editing = null; // { template, schedule: id | null } while the editor is open
let asked = 0; // refreshes started…
let shown = 0; // …and the newest one shown: an older answer arriving late is dropped

const specOf = (s) => ({
  name: s.name, template: s.template, cron: s.cron, timezone: s.timezone, enabled: s.enabled, overlap: s.overlap,
  catch_up_secs: s.catch_up_secs,
});
/** Changes when the definition does: the schedule's element is then built again. */
const versionOf = (s) => `${s.template}/${s.updated_at}/${s.enabled}`;
const boxOf = (templateId) => $(`schedules-${templateId}`)?.querySelector('.schedules-box');

function overlapWords(overlap) {
  return overlap === 'queue'
    ? 'overlap: queue (a fire waits for the previous run to end)'
    : 'overlap: skip (no fire while the previous run goes on)';
}

function catchUpWords(secs) {
  return secs ? `catch-up: the newest missed slot runs at start if at most ${secs} s old` : 'no catch-up';
}

/** The empty row under saved job `t`, spanning its `columns`; filled by render(). */
export function scheduleRow(t, columns) {
  const tr = el('tr', undefined, { id: `schedules-${t.id}`, class: 'schedules' });
  tr.hidden = true;
  const td = el('td', undefined, { colspan: String(columns) });
  const box = el('section', undefined, { class: 'schedules-box', 'aria-label': `Schedules of ${t.name}` });
  box.append(
    el('h3', 'Schedules'),
    el('p', 'No schedule.', { class: 'note none' }),
    el('div', undefined, { class: 'schedule-list' }),
    el('p', undefined, { class: 'error problem', role: 'alert' }),
    el('p', undefined, { class: 'result', 'aria-live': 'polite' }),
  );
  td.append(box);
  tr.append(td);
  return tr;
}

/** Says `message` (an error) in saved job `templateId`'s schedules box. */
export function templateProblem(templateId, message) {
  const box = boxOf(templateId);
  if (!box) return false;
  box.querySelector('.problem').textContent = message;
  box.querySelector('.result').textContent = '';
  render();
  box.scrollIntoView({ block: 'nearest' });
  return true;
}

function say(templateId, { problem = '', result = '' }) {
  const box = boxOf(templateId);
  if (!box) return;
  box.querySelector('.problem').textContent = problem;
  box.querySelector('.result').textContent = result;
}

function button(s, text, label, className, action) {
  const b = el('button', text, { type: 'button', class: className, 'aria-label': label });
  b.addEventListener('click', () => {
    say(s.template, {});
    action().catch((err) => templateProblem(s.template, `${s.name}: ${err.message}`));
  });
  return b;
}

function nextList(s) {
  if (s.next.length) {
    const ol = el('ol');
    ol.append(...s.next.map((ms) => el('li', utc(ms))));
    return ol;
  }
  return el('p', s.enabled ? 'no fire time ahead' : 'paused', { class: 'note' });
}

function fireLine(f) {
  const li = el('li');
  li.append(
    el('span', utc(f.slot), { class: 'slot' }),
    el('span', f.outcome, { class: OUTCOMES.has(f.outcome) ? `badge ${f.outcome}` : 'badge' }),
  );
  if (f.job !== null && f.job !== undefined) {
    li.append(el('a', `job ${f.job}`, { href: `/jobs/${encodeURIComponent(f.job)}` }));
  }
  if (f.reason) li.append(el('span', f.reason, { class: 'reason' }));
  else if (f.outcome === 'queued') li.append(el('span', 'waits for the previous run', { class: 'reason' }));
  return li;
}

function fireList(id) {
  const list = fires.get(id);
  if (!list) return el('p', 'not loaded yet', { class: 'note' });
  if (!list.length) return el('p', 'none yet', { class: 'note' });
  const ol = el('ol');
  ol.append(...list.map(fireLine));
  return ol;
}

/** Redraws the next times and the fires of a schedule's element when they changed. */
function updateTimes(article, s) {
  const nextKey = s.enabled ? s.next.join() : 'paused';
  const next = article.querySelector('.next');
  if (next.dataset.key !== nextKey) {
    next.replaceChildren(nextList(s));
    next.dataset.key = nextKey;
  }
  const firesKey = JSON.stringify(fires.get(s.id) ?? null);
  const list = article.querySelector('.fires');
  if (list.dataset.key !== firesKey) {
    list.replaceChildren(fireList(s.id));
    list.dataset.key = firesKey;
  }
}

function article(s) {
  const state = s.enabled ? 'enabled' : 'paused';
  const a = el('article', undefined, {
    id: `schedule-${s.id}`, class: `schedule ${state}`, 'data-schedule': s.name, 'data-version': versionOf(s),
  });
  const head = el('div', undefined, { class: 'schedule-head' });
  const timing = el('span', undefined, { class: 'timing' });
  timing.append(el('code', s.cron), ` ${s.timezone}`);
  head.append(el('strong', s.name, { class: 'name' }), el('span', state, { class: `badge state ${state}` }), timing);
  const rules = el('p', `${overlapWords(s.overlap)}; ${catchUpWords(s.catch_up_secs)}.`, { class: 'muted rules' });
  rules.append(el('br'), `Updated ${utc(s.updated_at)} by ${s.updated_by}.`);
  const times = el('div', undefined, { class: 'grid' });
  const nextBox = el('div');
  nextBox.append(el('h4', 'Next fires'), el('div', undefined, { class: 'next' }));
  const firesBox = el('div');
  firesBox.append(el('h4', 'Last fires'), el('div', undefined, { class: 'fires' }));
  times.append(nextBox, firesBox);
  a.append(head, rules, times);
  if (canRun) {
    const actions = el('div', undefined, { class: 'actions' });
    actions.append(
      button(s, s.enabled ? 'Pause' : 'Resume', `${s.enabled ? 'Pause' : 'Resume'} ${s.name}`, 'toggle secondary',
        () => toggle(s)),
      button(s, 'Edit', `Edit ${s.name}`, 'edit secondary', async () => openEditor(s.template, s)),
      button(s, 'Delete', `Delete ${s.name}`, 'delete danger', () => remove(s)),
    );
    a.append(actions);
  }
  updateTimes(a, s);
  return a;
}

/** Draws every listed saved job's schedules from what was last fetched, keeping elements that did not change. */
function render() {
  for (const t of templates) {
    const tr = $(`schedules-${t.id}`);
    if (!tr) continue;
    const box = tr.querySelector('.schedules-box');
    const list = box.querySelector('.schedule-list');
    const mine = schedules.filter((s) => s.template === t.id);
    const wanted = mine.map((s) => {
      const old = list.querySelector(`:scope > #schedule-${s.id}`);
      if (old && old.dataset.version === versionOf(s)) {
        updateTimes(old, s);
        return old;
      }
      return article(s);
    });
    const now = [...list.children];
    if (now.length !== wanted.length || wanted.some((a, i) => now[i] !== a)) list.replaceChildren(...wanted);
    const open = editing?.template === t.id;
    box.querySelector('.none').hidden = mine.length > 0;
    const said = box.querySelector('.problem').textContent || box.querySelector('.result').textContent;
    tr.hidden = mine.length === 0 && !open && !said;
  }
  placeEditor();
}

/** The editor sits in the box of the saved job it is open for (moved only when it is elsewhere: moving an element
 * loses the focus in it), or at home and hidden. */
function placeEditor() {
  if (!editor) return;
  const box = editing && templates.some((t) => t.id === editing.template) ? boxOf(editing.template) : null;
  if (!box) {
    editing = null;
    editor.hidden = true;
    if (editor.parentNode !== $('editor').parentNode) $('editor').before(editor);
    return;
  }
  if (editor.parentNode !== box) box.append(editor);
  editor.hidden = false;
}

/** Fetches the schedules of the listed saved jobs and their last fires, then redraws. */
async function refresh() {
  const mine = ++asked;
  const all = await api('/api/schedules');
  const listed = new Set(templates.map((t) => t.id));
  const showing = all.filter((s) => listed.has(s.template));
  const now = Date.now();
  for (const s of showing) if (changed.get(s.id)?.[0] !== versionOf(s)) changed.set(s.id, [versionOf(s), now]);
  const stale = (s) => s.enabled || !fires.has(s.id) || now - firesAt.get(s.id) > PAUSED_FIRES_MS
    || now - changed.get(s.id)[1] < CHANGED_MS || fires.get(s.id).some((f) => WAITING.has(f.outcome));
  const got = await Promise.all(showing.map((s) => (stale(s)
    ? api(`/api/schedules/${s.id}/fires?limit=${FIRES}`).catch(() => null) // gone meanwhile: the next round knows
    : null)));
  if (mine < shown) return;
  shown = mine;
  schedules = all;
  showing.forEach((s, i) => {
    if (got[i]) {
      fires.set(s.id, got[i]);
      firesAt.set(s.id, now);
    }
  });
  render();
}

/** After templates.js listed the saved jobs (each with scheduleRow): draws what is known, then fetches. */
export function showSchedules(list) {
  templates = list;
  render();
}

/** Loads the schedules, then keeps them fresh while the page is visible. */
export async function startSchedules(operator) {
  canRun = operator && editor !== null;
  if (editor) {
    $('schedule-form').addEventListener('submit', (e) => save(e));
    $('s-cancel').addEventListener('click', closeEditor);
  }
  const poll = () => setTimeout(async () => {
    if (!document.hidden) await refresh().catch(() => {}); // the next round tries again
    poll();
  }, POLL_MS);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh().catch(() => {}); });
  try {
    await refresh();
  } finally {
    poll();
  }
}

async function toggle(s) {
  const current = schedules.find((x) => x.id === s.id) ?? s;
  const enabled = !current.enabled;
  await api(`/api/schedules/${s.id}`, { method: 'PUT', body: { ...specOf(current), enabled } });
  say(s.template, { result: `${enabled ? 'Resumed' : 'Paused'} “${s.name}”.` });
  await refresh();
  $(`schedule-${s.id}`)?.querySelector('button.toggle')?.focus();
}

async function remove(s) {
  if (!window.confirm(`Delete the schedule “${s.name}”? Its record of fires goes with it; the jobs it started stay in the history.`)) return;
  await api(`/api/schedules/${s.id}`, { method: 'DELETE' });
  if (editing?.schedule === s.id) closeEditor();
  say(s.template, { result: `Deleted the schedule “${s.name}”.` });
  await refresh();
}

// ---- the editor ----

function clearErrors() {
  for (const slot of editor.querySelectorAll('.field-error')) slot.textContent = '';
  for (const input of editor.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  $('s-problem').textContent = '';
}

/** Opens the editor in saved job `templateId`'s box: for a new schedule (`s` null) or to edit `s`. */
export function openEditor(templateId, s = null) {
  const t = templates.find((x) => x.id === templateId);
  if (!editor || !t) return;
  editing = { template: templateId, schedule: s ? s.id : null };
  clearErrors();
  say(templateId, {});
  $('s-name').value = s ? s.name : '';
  $('s-cron').value = s ? s.cron : '';
  $('s-timezone').value = s ? s.timezone : browserZone;
  $('s-overlap').value = s ? s.overlap : 'skip';
  $('s-catch-up').value = String(s ? s.catch_up_secs : 0);
  $('s-title').textContent = s ? `Edit the schedule “${s.name}”` : `Add a schedule to “${t.name}”`;
  $('s-save').textContent = s ? 'Save changes' : 'Add the schedule';
  render();
  editor.scrollIntoView({ block: 'nearest' });
  $('s-name').focus();
}

function closeEditor() {
  const templateId = editing?.template;
  editing = null;
  render();
  if (templateId !== undefined) $(`template-${templateId}`)?.querySelector('button.add-schedule')?.focus();
}

/** Shows `message` beside the input `field` names; false when none does. */
function showFieldError(field, message) {
  if (!Object.hasOwn(FIELDS, field)) return false;
  $(`err-s-${field}`).textContent = message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
  const input = $(FIELDS[field]);
  input.setAttribute('aria-invalid', 'true');
  input.focus();
  return true;
}

async function save(e) {
  e.preventDefault();
  clearErrors();
  if (!editing) return;
  const { template, schedule } = editing;
  const catchUp = $('s-catch-up');
  if (catchUp.validity.badInput) {
    showFieldError('catch_up_secs', 'must be a whole number of seconds');
    return;
  }
  const old = schedule === null ? null : schedules.find((s) => s.id === schedule);
  const body = {
    name: $('s-name').value, template, cron: $('s-cron').value, timezone: $('s-timezone').value.trim(),
    enabled: old ? old.enabled : true, overlap: $('s-overlap').value,
    catch_up_secs: catchUp.value === '' ? 0 : Number(catchUp.value),
  };
  $('s-save').disabled = true;
  let id = schedule, next;
  try {
    if (id === null) ({ id, next } = await api('/api/schedules', { method: 'POST', body }));
    else ({ next } = await api(`/api/schedules/${id}`, { method: 'PUT', body }));
  } catch (err) {
    const field = err.status === 409 ? 'name' : err.field;
    if (!field || !showFieldError(field, err.message)) $('s-problem').textContent = err.message;
    return;
  } finally {
    $('s-save').disabled = false;
  }
  editing = null;
  const when = next.length ? `next fire ${utc(next[0])}` : 'paused';
  say(template, { result: `Saved the schedule “${body.name.trim()}”: ${when}.` });
  try {
    await refresh();
  } catch (err) {
    templateProblem(template, err.message);
    return;
  }
  const saved = $(`schedule-${id}`);
  if (saved) {
    saved.classList.add('highlight');
    saved.scrollIntoView({ block: 'nearest' });
    saved.querySelector('button.toggle')?.focus();
  }
}
