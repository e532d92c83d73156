// /users: for admins, the users (add, change the role, disable, enable); for everyone, their API tokens (an admin sees
// all): create (shown once), revoke.
import { api, clearFieldErrors, confirmInPlace, el, showFieldError, utc } from '/assets/console.js';

const $ = (id) => document.getElementById(id);
const admin = $('main').dataset.admin === 'true';
const when = (ms) => (ms ? utc(ms) : 'never');
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
    const path = `/api/users/${encodeURIComponent(u.name)}`;
    // The role as a choice: it applies to the user's sessions and tokens from their next request on.
    const role = el('td');
    const select = el('select', undefined, { id: `role-${u.name}`, name: 'role' });
    for (const r of ['viewer', 'operator', 'admin']) select.append(el('option', r));
    select.value = u.role;
    role.append(el('label', `Role of ${u.name}`, { for: select.id, class: 'inline' }), ' ', select, ' ',
      button(`Set role of ${u.name}`, async () => {
        // Refused or not, the list is shown again as stored (a refused choice does not linger in the select).
        try { await api(`${path}/role`, { method: 'POST', body: { role: select.value } }); } finally { await users(); }
      }));
    const actions = el('td');
    if (u.disabled_at) {
      actions.append(button(`Enable ${u.name}`, async () => {
        await api(`${path}/enable`, { method: 'POST', body: {} });
        await users();
      }));
    } else {
      actions.append(button(`Disable ${u.name}`, async () => {
        if (!window.confirm(`Disable ${u.name}? Their sessions end at once.`)) return;
        await api(`${path}/disable`, { method: 'POST', body: {} });
        await users();
      }));
    }
    tr.append(el('td', u.name), role, el('td', u.disabled_at ? `disabled ${when(u.disabled_at)}` : 'active'), actions);
    return tr;
  }));
}

async function tokens() {
  const list = await api('/api/tokens');
  $('tokens').querySelector('tbody').replaceChildren(...list.map((t) => {
    const tr = el('tr', undefined, { 'data-token': t.name });
    const actions = el('td');
    // Revoking cannot be undone (whatever uses the token stops working): asked first, in place.
    const revoke = el('button', `Revoke ${t.name}`, { type: 'button', class: 'danger' });
    revoke.addEventListener('click', () => confirmInPlace(revoke, `Revoke ${t.name}?`, `Yes, revoke ${t.name}`,
      async () => {
        try { await api(`/api/tokens/${t.id}`, { method: 'DELETE' }); $('problem').textContent = ''; } catch (err) { fail(err); }
        await tokens();
      }));
    actions.append(revoke);
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
      clearFieldErrors($('user-form'));
      $('problem').textContent = '';
      $('user-result').textContent = added.password
        ? `Added ${added.user.name}. Their password, shown once: ${added.password}`
        : `Added ${added.user.name}.`;
      $('user-form').reset();
      await users();
    } catch (err) { showFieldError($('user-form'), { name: 'u-name', role: 'u-role', password: 'u-password' }, err, $('problem')); }
  });
  users().catch(fail);
}

$('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const made = await api('/api/tokens', { method: 'POST', body: { name: $('t-name').value.trim(), role: $('t-role').value } });
    clearFieldErrors($('token-form'));
    $('problem').textContent = '';
    $('new-token').textContent = made.token;
    $('token-form').reset();
    await tokens();
  } catch (err) { showFieldError($('token-form'), { name: 't-name', role: 't-role' }, err, $('problem')); }
});
tokens().catch(fail);
