// /activity (admins): the activity log (GET /api/activity, newest first, paged with `before`) under the filters
// of the form, which also shape the CSV link. Every value from the log is shown as text, never as HTML.
import { api, el, utc } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const PAGE = 100;
let oldest = null;

// A link may carry the filters: /activity?actor=alice&kind=host.
const linked = new URLSearchParams(window.location.search);
for (const [key, value] of linked) {
  const input = document.querySelector(`#filters [name="${key}"]`);
  if (input) input.value = value;
}

function filters() {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData($('filters'))) {
    if (String(value).trim()) params.set(key, String(value).trim());
  }
  return params;
}

/** One line per field: `field: value`, or for an edit `field: [before, after]` (as the API gives them). */
function changesText(changes) {
  const show = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
  return Object.entries(changes || {}).map(([field, value]) => `${field}: ${show(value)}`).join('\n');
}

function line(e) {
  const tr = el('tr', undefined, { 'data-id': String(e.id) });
  const who = e.credential ? `${e.actor} (${e.credential})` : e.actor;
  const from = [e.address, e.user_agent].filter(Boolean).join(' · ');
  const cells = [['When', utc(e.at)], ['Who', who], ['From', from], ['Action', e.action], ['Object', e.object],
    ['Changes', changesText(e.changes)], ['Outcome', e.outcome]];
  for (const [label, text] of cells) {
    const td = el('td', text, { 'data-label': label });
    if (label === 'Changes') td.classList.add('changes');
    if (label === 'Outcome' && text !== 'ok') td.classList.add('error');
    tr.append(td);
  }
  return tr;
}

async function load(more) {
  const params = filters();
  params.set('limit', String(PAGE));
  if (more && oldest !== null) params.set('before', String(oldest));
  try {
    const rows = await api(`/api/activity?${params}`);
    $('problem').textContent = '';
    const body = $('entries').tBodies[0];
    if (!more) body.replaceChildren();
    body.append(...rows.map(line));
    if (rows.length) oldest = rows[rows.length - 1].id;
    $('older').hidden = rows.length < PAGE;
    $('none').hidden = body.rows.length > 0;
  } catch (err) {
    $('problem').textContent = err.field ? `${err.field}: ${err.message}` : err.message;
  }
  const csv = filters();
  $('csv').href = `/api/activity.csv${csv.toString() ? `?${csv}` : ''}`;
}

$('filters').addEventListener('submit', (event) => {
  event.preventDefault();
  oldest = null;
  const shown = filters();
  window.history.replaceState(null, '', `/activity${shown.toString() ? `?${shown}` : ''}`);
  load(false);
});
$('older').addEventListener('click', () => load(true));
load(false);
