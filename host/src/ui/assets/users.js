// /users: for admins, the users (add, disable, set a password); for everyone, their API tokens (an admin sees
// all): create (shown once), revoke.
import { api, el } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const admin = $('main').dataset.admin === 'true';
const when = (ms) => (ms ? new Date(ms).toLocaleString() : 'never');
const fail = (err) => { $('problem').textContent = err.message; };

function button(text, action) {
  const b = el('button', text, { type: 'button' });
  b.addEventListener('click', () => action().catch(fail));
  return b;
}

async function users() {
  const list = await api('/api/users');
  $('users').querySelector('tbody').replaceChildren(...list.map((u) => {
    const tr = el('tr', undefined, { 'data-user': u.name });
    const actions = el('td');
    if (!u.disabled_at) {
      actions.append(button(`Disable ${u.name}`, async () => {
        if (!window.confirm(`Disable ${u.name}? Their sessions end at once.`)) return;
        await api(`/api/users/${encodeURIComponent(u.name)}/disable`, { method: 'POST', body: {} });
        await users();
      }));
    }
    tr.append(el('td', u.name), el('td', u.role), el('td', u.disabled_at ? `disabled ${when(u.disabled_at)}` : 'active'), actions);
    return tr;
  }));
}

async function tokens() {
  const list = await api('/api/tokens');
  $('tokens').querySelector('tbody').replaceChildren(...list.map((t) => {
    const tr = el('tr', undefined, { 'data-token': t.name });
    const actions = el('td');
    actions.append(button(`Revoke ${t.name}`, async () => {
      await api(`/api/tokens/${t.id}`, { method: 'DELETE' });
      await tokens();
    }));
    tr.append(el('td', t.name), el('td', t.role), el('td', t.user ?? t.host ?? '—'), el('td', when(t.created_at)),
      el('td', when(t.last_used_at)), actions);
    return tr;
  }));
}

if (admin) {
  $('users-box').hidden = false;
  $('user-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: $('u-name').value.trim(), role: $('u-role').value };
    if ($('u-password').value) body.password = $('u-password').value;
    try {
      const added = await api('/api/users', { method: 'POST', body });
      $('user-result').textContent = added.password
        ? `Added ${added.user.name}. Their password, shown once: ${added.password}`
        : `Added ${added.user.name}.`;
      $('user-form').reset();
      await users();
    } catch (err) { fail(err); }
  });
  users().catch(fail);
}

$('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const made = await api('/api/tokens', { method: 'POST', body: { name: $('t-name').value.trim(), role: $('t-role').value } });
    $('new-token').textContent = made.token;
    $('token-form').reset();
    await tokens();
  } catch (err) { fail(err); }
});
tokens().catch(fail);
