// /users: for admins, the users (add, change the role, disable, enable) and their grants (add, remove); for everyone,
// their API tokens (an admin sees all): create (shown once), revoke.
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
  const chosen = $('g-user').value;
  $('g-user').replaceChildren(...list.map((u) => el('option', u.name, { value: u.name })));
  if (list.some((u) => u.name === chosen)) $('g-user').value = chosen;
  await grants();
}

/// One grant in words: "operator on Linux.DB, tag prod; modules 1003".
function describeGrant(g) {
  const covers = [
    ...g.functions.map((f) => `function ${f}`), ...g.apps.map((a) => `app ${a}`), ...g.tags.map((t) => `tag ${t}`),
  ];
  const runs = [...g.modules.map((m) => `module ${m}`), ...g.templates.map((t) => `saved job ${t}`)];
  return `${g.role ?? "the user's own role"} on ${covers.length ? covers.join(', ') : 'every host'}`
    + (runs.length ? `; runs only ${runs.join(', ')}` : '');
}

async function grants() {
  const user = $('g-user').value;
  if (!user) return;
  const path = `/api/users/${encodeURIComponent(user)}/grants`;
  const list = await api(path);
  const items = list.map((g) => {
    const li = el('li', undefined, { 'data-grant': g.id });
    const remove = el('button', `Remove grant ${g.id} of ${user}`, { type: 'button', class: 'danger' });
    remove.addEventListener('click', () => confirmInPlace(remove, `Remove it? ${list.length === 1 ? `${user} will reach nothing.` : ''}`,
      `Yes, remove grant ${g.id}`, async () => {
        try { await api(`${path}/${g.id}`, { method: 'DELETE' }); $('problem').textContent = ''; } catch (err) { fail(err); }
        await grants();
      }));
    li.append(el('span', describeGrant(g)), ' ', remove);
    return li;
  });
  $('grants').replaceChildren(...(items.length ? items : [el('li', `${user} has no grant: they reach nothing.`)]));
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
  $('grants-box').hidden = false;
  $('g-user').addEventListener('change', () => grants().catch(fail));
  $('grant-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const words = (id) => $(id).value.split(/\s+/).filter((w) => w);
    const body = { functions: words('g-functions'), apps: words('g-apps'), tags: words('g-tags') };
    // Ids as numbers; a word that is not one is sent as is, for the server to name the field it is wrong in.
    for (const [key, id] of [['modules', 'g-modules'], ['templates', 'g-templates']]) {
      body[key] = words(id).map((w) => (/^\d+$/.test(w) ? Number(w) : w));
    }
    if ($('g-role').value) body.role = $('g-role').value;
    const fields = { role: 'g-role', functions: 'g-functions', apps: 'g-apps', tags: 'g-tags', modules: 'g-modules', templates: 'g-templates' };
    try {
      await api(`/api/users/${encodeURIComponent($('g-user').value)}/grants`, { method: 'POST', body });
      clearFieldErrors($('grant-form'));
      $('problem').textContent = '';
      $('grant-form').reset();
      await grants();
    } catch (err) { showFieldError($('grant-form'), fields, err, $('problem')); }
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
