// /api-docs: the OpenAPI document rendered by the console itself (no CDN, no third-party viewer).
import { api, el } from '/assets/console.js';

const refName = (schema) => {
  if (!schema) return '';
  if (schema.$ref) return schema.$ref.split('/').pop();
  if (schema.type === 'array' && schema.items) return `array of ${refName(schema.items)}`;
  return schema.type || 'object';
};

async function start() {
  const doc = await api('/api/openapi.json');
  const box = document.getElementById('operations');
  for (const [path, item] of Object.entries(doc.paths).sort(([a], [b]) => a.localeCompare(b))) {
    for (const [method, op] of Object.entries(item)) {
      const section = el('section', undefined, { class: 'group', 'data-operation': `${method.toUpperCase()} ${path}` });
      const title = el('h2'); // under the page's h1: headings go down one level at a time
      title.append(el('span', `${method.toUpperCase()} ${path}`, { class: 'hosts' }),
        el('span', ` — ${op['x-omserver-access'] || ''}`));
      section.append(title);
      if (op.summary) section.append(el('p', op.summary));
      if (op.description && op.description !== op.summary) section.append(el('p', op.description));
      for (const p of op.parameters || []) section.append(el('div', `parameter ${p.name} (${p.in}): ${p.description || ''}`));
      const body = op.requestBody?.content?.['application/json']?.schema;
      if (body) section.append(el('div', `request body: ${refName(body)}`));
      for (const [code, r] of Object.entries(op.responses || {})) {
        const schema = r.content ? Object.values(r.content)[0]?.schema : null;
        section.append(el('div', `${code}: ${r.description}${schema ? ` (${refName(schema)})` : ''}`));
      }
      box.append(section);
    }
  }
}
start().catch((err) => { document.getElementById('problem').textContent = err.message; });
