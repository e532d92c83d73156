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
    // A 400 names the request field it is about (`{"error", "field"}`): forms show it beside that input.
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
