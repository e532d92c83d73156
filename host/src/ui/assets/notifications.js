// /notifications (admins): channels (create, test, delete), subscriptions (create, delete) and the delivery log
// (attempts, send again). Channel names, receivers' answers and messages are untrusted text: textContent only.
import { api, el, utc, option } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const problem = $('problem');

function say(err) {
  problem.textContent = err ? String(err.message || err) : '';
}

/** Shows a 400's or 422's message beside the input its field names; false when there is none. */
function showFieldError(form, field, message) {
  const slot = $(`err-${String(field).replaceAll('.', '-')}`);
  if (!slot || !form.contains(slot)) return false;
  slot.textContent = message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
  return true;
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll('.field-error, .error')) slot.textContent = '';
}

const list = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

function button(text, onClick, secondary = true) {
  const b = el('button', text, { type: 'button', class: secondary ? 'secondary' : '' });
  b.addEventListener('click', onClick);
  return b;
}

// Channels

let channels = [];

function target(c) {
  if (c.kind === 'email') return `${(c.to || []).join(', ')} via ${c.smtp ? `${c.smtp.host}:${c.smtp.port} (${c.smtp.tls})` : '?'}`;
  return c.url || '';
}

async function testChannel(c, b) {
  b.disabled = true;
  b.textContent = 'Sending…';
  try {
    const d = await api(`/api/notify/channels/${c.id}/test`, { method: 'POST', body: {} });
    say(d.status === 'sent' ? null : new Error(`Test to ${c.name}: ${d.status}${d.last_error ? `: ${d.last_error}` : ''}`));
    b.textContent = d.status === 'sent' ? 'Sent' : 'Not taken';
    setTimeout(() => { b.textContent = 'Send a test'; }, 4000);
    await loadDeliveries();
  } catch (err) {
    say(err);
    b.textContent = 'Send a test';
  } finally {
    b.disabled = false;
  }
}

async function deleteChannel(c) {
  if (!window.confirm(`Delete the channel “${c.name}”? Its subscriptions and its delivery log go with it.`)) return;
  try {
    await api(`/api/notify/channels/${c.id}`, { method: 'DELETE' });
    await loadAll();
  } catch (err) { say(err); }
}

function renderChannels() {
  const body = document.querySelector('#channels tbody');
  body.replaceChildren();
  for (const c of channels) {
    const tr = el('tr');
    const actions = el('td');
    const test = button('Send a test', () => testChannel(c, test));
    actions.append(test, ' ', button('Delete', () => deleteChannel(c)));
    tr.append(el('td', c.name), el('td', c.kind), el('td', target(c), { class: 'mono' }), el('td', utc(c.created_at)), actions);
    body.append(tr);
  }
  $('channels-empty').hidden = channels.length > 0;
  const select = $('s-channel');
  const chosen = select.value;
  select.replaceChildren(...channels.map((c) => option(String(c.id), `${c.name} (${c.kind})`)));
  if (chosen) select.value = chosen;
}

function showKind() {
  const kind = $('c-kind').value;
  for (const part of document.querySelectorAll('#channel-form [data-for]')) {
    part.hidden = !part.dataset.for.split(' ').includes(kind);
  }
}

async function addChannel(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  const kind = $('c-kind').value;
  const body = { name: $('c-name').value.trim(), kind };
  if (kind === 'email') {
    body.to = list($('c-to').value);
    body.from = $('c-from').value.trim();
    body.smtp = { host: $('c-smtp-host').value.trim(), port: Number($('c-smtp-port').value), tls: $('c-smtp-tls').value };
    if ($('c-smtp-user').value.trim()) body.smtp.user = $('c-smtp-user').value.trim();
    if ($('c-smtp-password').value) body.smtp.password = $('c-smtp-password').value;
  } else {
    body.url = $('c-url').value.trim();
  }
  try {
    const made = await api('/api/notify/channels', { method: 'POST', body });
    form.reset();
    showKind();
    if (made.secret) {
      $('secret').textContent = made.secret;
      $('secret-box').hidden = false;
    }
    await loadAll();
  } catch (err) {
    if (!(err.field && showFieldError(form, err.field, err.message))) $('channel-problem').textContent = err.message;
  }
}

// Subscriptions

function filterText(f) {
  const parts = Object.entries(f || {}).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`);
  return parts.length ? parts.join('; ') : 'everything';
}

async function loadSubscriptions() {
  const subs = await api('/api/notify/subscriptions');
  const body = document.querySelector('#subscriptions tbody');
  body.replaceChildren();
  for (const s of subs) {
    const remove = button('Delete', async () => {
      if (!window.confirm(`Stop sending ${s.event} to ${s.channel_name}?`)) return;
      try {
        await api(`/api/notify/subscriptions/${s.id}`, { method: 'DELETE' });
        await loadSubscriptions();
      } catch (err) { say(err); }
    });
    const actions = el('td');
    actions.append(remove);
    const tr = el('tr');
    tr.append(el('td', s.channel_name), el('td', s.event), el('td', filterText(s.filter)), el('td', utc(s.created_at)), actions);
    body.append(tr);
  }
  $('subscriptions-empty').hidden = subs.length > 0;
}

function showEvent() {
  const event = $('s-event').value;
  for (const part of document.querySelectorAll('#subscription-form [data-event]')) part.hidden = !part.dataset.event.split(' ').includes(event);
}

async function addSubscription(e) {
  e.preventDefault();
  const form = e.target;
  clearErrors(form);
  const event = $('s-event').value;
  const filter = {};
  const text = (id) => $(id).value.trim();
  if (event === 'job.finished' || event === 'job.approval') {
    if (event === 'job.finished' && list(text('f-status')).length) filter.status = list(text('f-status'));
    if (text('f-module')) filter.module = Number(text('f-module'));
    if (text('f-template')) filter.template = text('f-template');
    if (text('f-app')) filter.app = text('f-app');
  } else if (event === 'schedule.fire') {
    if (text('f-schedule')) filter.schedule = text('f-schedule');
  } else if (event === 'audit.alert') {
    if (text('f-rule')) filter.rule = text('f-rule');
    if (text('f-window')) filter.window_secs = Number(text('f-window'));
  } else if (event === 'backend.unhealthy') {
    if (text('f-backend')) filter.backend = text('f-backend');
  }
  if (!$('s-channel').value) {
    showFieldError(form, 'channel', 'Add a channel first.');
    return;
  }
  try {
    await api('/api/notify/subscriptions', { method: 'POST', body: { channel: Number($('s-channel').value), event, filter } });
    for (const input of form.querySelectorAll('[data-event] input')) input.value = '';
    await loadSubscriptions();
  } catch (err) {
    if (!(err.field && showFieldError(form, err.field, err.message))) $('subscription-problem').textContent = err.message;
  }
}

// Deliveries

async function showAttempts(d) {
  try {
    const full = await api(`/api/notify/deliveries/${d.id}`);
    $('attempts-title').textContent = `Attempts of “${full.title}” (id ${full.uid})`;
    $('attempts').replaceChildren(...(full.log || []).map((a) => el('li', `${utc(a.at)}: ${a.ok ? 'taken' : 'not taken'}: ${a.answer}`)));
    if (!(full.log || []).length) $('attempts').append(el('li', 'No attempt yet.'));
    $('attempts-box').hidden = false;
  } catch (err) { say(err); }
}

async function loadDeliveries() {
  const status = $('l-status').value;
  const rows = await api(`/api/notify/deliveries?limit=100${status ? `&status=${status}` : ''}`);
  const body = document.querySelector('#deliveries tbody');
  body.replaceChildren();
  for (const d of rows) {
    const actions = el('td');
    actions.append(button('Attempts', () => showAttempts(d)));
    if (d.status === 'failed') {
      actions.append(' ', button('Send again', async () => {
        try {
          await api(`/api/notify/deliveries/${d.id}/resend`, { method: 'POST', body: {} });
          await loadDeliveries();
        } catch (err) { say(err); }
      }));
    }
    const count = d.count > 1 ? ` (${d.count} matches)` : '';
    const state = el('td', d.status, { class: `status status-${d.status}` });
    const tr = el('tr');
    body.append(tr);
    tr.append(el('td', utc(d.created_at)), el('td', d.event), el('td', d.channel_name), el('td', d.title + count),
      state, el('td', String(d.attempts)), el('td', d.last_error || ''), actions);
  }
  $('deliveries-empty').hidden = rows.length > 0;
}

async function loadAll() {
  try {
    channels = await api('/api/notify/channels');
    renderChannels();
    await loadSubscriptions();
    await loadDeliveries();
  } catch (err) { say(err); }
}

$('c-kind').addEventListener('change', showKind);
$('s-event').addEventListener('change', showEvent);
$('channel-form').addEventListener('submit', addChannel);
$('subscription-form').addEventListener('submit', addSubscription);
$('l-status').addEventListener('change', () => loadDeliveries().catch(say));
$('secret-done').addEventListener('click', () => { $('secret').textContent = ''; $('secret-box').hidden = true; });
$('attempts-done').addEventListener('click', () => { $('attempts-box').hidden = true; });
showKind();
showEvent();
loadAll();
// The log moves by itself (retries, new events): refresh it while the page is open.
setInterval(() => { if (!document.hidden) loadDeliveries().catch(say); }, 5000);
