// Shared by every console page. Nothing here (or in any page script) inserts text as HTML: untrusted strings
// (host names, command output, module text, audited commands) only ever go through textContent.

/** Creates an element with text content and optional attributes. */
export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

/** `2026-12-02 10:30:05 UTC`: times as every page shows them (the server's `calendar::utc_text` form). */
export function utc(ms) {
  return `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

let csrf = null;

/** The session's CSRF token, from the page (a form's hidden field) or else from /api/session. */
async function csrfToken() {
  if (csrf) return csrf;
  const field = document.querySelector('input[name="csrf_token"]');
  if (field && field.value) return (csrf = field.value);
  const response = await fetch('/api/session', { credentials: 'same-origin' });
  if (response.ok) csrf = (await response.json()).csrf_token;
  return csrf;
}

/** fetch() for the JSON API with the session cookie and, on state-changing requests, the CSRF token. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = await csrfToken();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    window.location.assign('/login');
    throw new Error('not logged in');
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    // A 400 or 422 names the request field it is about (`{"error", "field"}`): forms show it beside that input.
    const err = new Error(data.error || `${response.status} ${response.statusText}`);
    err.status = response.status;
    err.field = data.field ?? null;
    throw err;
  }
  return data;
}

/** An <option> with a value and a text. */
export function option(value, text) {
  const o = el('option', text);
  o.value = value;
  return o;
}

/**
 * One module parameter's input, built from its schema (GET /api/modules): a select for a choice, a number for an
 * integer, text otherwise, with `param-NAME` as its id. Used by /run and by the saved jobs' form.
 */
export function paramField(p) {
  const id = `param-${p.name}`;
  const wrap = el('div', undefined, { class: 'param' });
  wrap.append(el('label', `${p.name}${p.required ? ' (required)' : ''}`, { for: id }));
  let input;
  if (p.type === 'choice') {
    input = el('select', undefined, { id, name: p.name });
    if (!p.required) input.append(option('', '(none)'));
    for (const c of p.choices) input.append(option(c, c));
    if (p.default !== undefined) input.value = p.default;
  } else if (p.type === 'integer') {
    input = el('input', undefined, { id, name: p.name, type: 'number', min: String(p.min), max: String(p.max), step: '1' });
    if (p.default !== undefined) input.value = String(p.default);
  } else {
    input = el('input', undefined, { id, name: p.name, type: 'text' });
    // The schema's pattern is Rust regex syntax: used in the browser only when JavaScript reads it the same way.
    try { new RegExp(`^(?:${p.pattern})$`, 'v'); input.setAttribute('pattern', p.pattern); } catch { /* server checks */ }
    if (p.default !== undefined) input.value = p.default;
  }
  if (p.required && p.default === undefined) input.required = true;
  wrap.append(input);
  if (p.description) wrap.append(el('small', p.description));
  return wrap;
}

/** A job's or saved job's rollout in words (`null`: every host at once). */
export function describeRollout(rollout) {
  if (!rollout) return 'all hosts at once';
  const parts = [`batches of ${rollout.batch}`];
  parts.push(rollout.max_failed === undefined || rollout.max_failed === null
    ? 'no failure threshold' : `stop once more than ${rollout.max_failed} not ok`);
  if (rollout.pause_secs) parts.push(`${rollout.pause_secs} s between batches`);
  return parts.join(', ');
}

/**
 * Folds host names into ranges, as clush -b and dshbak -c do: web01 web02 web03 web07 → web[01-03,07].
 * Names share a range when they differ only in one trailing number of the same width.
 */
export function foldHosts(names) {
  const groups = new Map();
  const plain = [];
  for (const name of [...new Set(names)].sort()) {
    const m = /^(.*?)(\d+)(\D*)$/.exec(name);
    if (!m) { plain.push(name); continue; }
    const key = `${m[1]}\u0000${m[2].length}\u0000${m[3]}`;
    if (!groups.has(key)) groups.set(key, { prefix: m[1], suffix: m[3], width: m[2].length, numbers: [] });
    groups.get(key).numbers.push(Number(m[2]));
  }
  const out = [...plain];
  for (const g of groups.values()) {
    const pad = (n) => String(n).padStart(g.width, '0');
    if (g.numbers.length === 1) { out.push(g.prefix + pad(g.numbers[0]) + g.suffix); continue; }
    g.numbers.sort((a, b) => a - b);
    const ranges = [];
    let start = g.numbers[0], end = start;
    for (const n of g.numbers.slice(1)) {
      if (n === end + 1) { end = n; continue; }
      ranges.push(start === end ? pad(start) : `${pad(start)}-${pad(end)}`);
      start = end = n;
    }
    ranges.push(start === end ? pad(start) : `${pad(start)}-${pad(end)}`);
    out.push(`${g.prefix}[${ranges.join(',')}]${g.suffix}`);
  }
  return out.sort().join(',');
}

/** The icon beside each job or host status (the same as `ui::status_icon` on the server). */
const STATUS_ICONS = {
  succeeded: '✓', ok: '✓', failed: '✗', running: '⟳', queued: '◷', cancelled: '⊘', unreachable: '⚠', lost: '⊗', skipped: '↷',
  pending_approval: '‖', rejected: '✗', expired: '⊖',
};

/** A status as a badge: an icon, the word and a colour, so that it never rests on colour alone. */
export function statusBadge(status) {
  const badge = el('span', undefined, { class: `badge ${status}` });
  badge.append(el('span', STATUS_ICONS[status] ?? '•', { 'aria-hidden': 'true' }), ` ${status}`);
  return badge;
}

/** Durations as the console shows them: 850 ms, 12.3 s, 4 min 05 s, 2 h 03 min. */
export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/**
 * Asks in place before a destructive action: the button is replaced by a question with "Yes, …" and "Keep"
 * buttons (no window.confirm: it blocks the page and reads the same for every action).
 */
export function confirmInPlace(button, question, yes, action) {
  const box = el('span', undefined, { class: 'ask', role: 'group', 'aria-label': question });
  const go = el('button', yes, { type: 'button', class: 'danger' });
  const keep = el('button', 'Keep', { type: 'button', class: 'secondary' });
  box.append(el('span', `${question} `), go, ' ', keep);
  button.replaceWith(box);
  go.focus();
  keep.addEventListener('click', () => { box.replaceWith(button); button.focus(); });
  go.addEventListener('click', async () => {
    go.disabled = true;
    try { await action(); } finally { if (box.isConnected) box.replaceWith(button); }
  });
}

/**
 * Shows a request's error beside the form field it names (`err.field`, from a 400 or 422), or else in `fallback`.
 * `inputs` maps field names to input ids; each input's error goes into a `.field-error` after it (made on demand).
 * Call `clearFieldErrors(form)` after the next success: an old error must not linger.
 */
export function showFieldError(form, inputs, err, fallback) {
  clearFieldErrors(form);
  const input = err.field && inputs[err.field] ? document.getElementById(inputs[err.field]) : null;
  fallback.textContent = input ? '' : err.message;
  if (!input) return;
  let slot = document.getElementById(`err-${input.id}`);
  if (!slot) {
    slot = el('p', undefined, { class: 'field-error', id: `err-${input.id}` });
    input.after(slot);
  }
  // Beside the field its name is noise ("pattern: error: …").
  slot.textContent = err.message.startsWith(`${err.field}: `) ? err.message.slice(err.field.length + 2) : err.message;
  input.setAttribute('aria-invalid', 'true');
  input.setAttribute('aria-describedby', slot.id);
  input.focus();
}

/** Clears the errors `showFieldError` showed in `form`. */
export function clearFieldErrors(form) {
  for (const slot of form.querySelectorAll('.field-error')) slot.textContent = '';
  for (const input of form.querySelectorAll('[aria-invalid]')) {
    input.removeAttribute('aria-invalid');
    input.removeAttribute('aria-describedby');
  }
}
