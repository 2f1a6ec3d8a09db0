// Metrics: the list (search, archived), create, a metric's page (archive, unarchive, delete),
// edit with the live update preview, and the revision timeline.

import { api, all, ApiError } from './api.js';
import { h, clear, field, select, input, table, link, errorBox, announce, notice, shown, json, pre, debounce, instant, monthStart } from './ui.js';
import { metricForm, mergePatch, LOCKED_FIELDS } from './metric_form.js';

const enc = encodeURIComponent;
const metricUrl = (m) => `/console/metrics/${enc(m.code)}`;

export async function list(ctx) {
  ctx.title('Metrics');
  const search = ctx.query.get('search') || '';
  const archived = ctx.query.get('archived') || 'false';
  const metrics = await all('/v1/metrics', { search, archived });
  if (!ctx.alive()) return;
  const searchInput = input('search', search, { type: 'search' });
  const archivedSelect = select('archived', [['false', 'Active'], ['true', 'Archived'], ['all', 'All']], archived);
  const form = h(
    'form',
    { class: 'filters', role: 'search' },
    field('Search code or name', searchInput),
    field('Show', archivedSelect),
    h('button', { type: 'submit' }, 'Search'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ search: searchInput.value, archived: archivedSelect.value });
    ctx.navigate(`/console/metrics?${q}`);
  });
  const rows = metrics.map((m) => [
    link(metricUrl(m), m.code),
    m.name,
    m.aggregation.type + (m.aggregation.field ? ` of ${m.aggregation.field}` : ''),
    m.event_code,
    String(m.revision),
    m.archived_at ? 'archived' : 'active',
  ]);
  clear(
    ctx.main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Metrics'), link('/console/metrics/new', 'New metric', { class: 'button' })),
    form,
    metrics.length
      ? table(`${metrics.length} metric${metrics.length === 1 ? '' : 's'}`, ['Code', 'Name', 'Aggregation', 'Event code', 'Revision', 'State'], rows, { id: 'metrics-table' })
      : notice('No metric matches.'),
  );
}

export async function create(ctx) {
  ctx.title('New metric');
  const form = metricForm(null);
  const save = h('button', { type: 'submit' }, 'Create metric');
  const element = h('form', { class: 'card', novalidate: true }, form.element, h('div', { class: 'actions' }, save));
  element.addEventListener('submit', async (e) => {
    e.preventDefault();
    const definition = form.read();
    for (const key of Object.keys(definition)) if (definition[key] === null) delete definition[key];
    save.disabled = true;
    try {
      const metric = await api('/v1/metrics', { method: 'POST', body: definition });
      announce(`Created metric ${metric.code}`);
      ctx.navigate(metricUrl(metric));
    } catch (error) {
      form.showProblems(error);
      element.querySelector('[role=alert]')?.scrollIntoView({ block: 'nearest' });
    } finally {
      save.disabled = false;
    }
  });
  clear(ctx.main, h('h1', {}, 'New metric'), element);
  form.focus();
}

// The plans whose charges read this metric: they lock its locked fields (semantics 6.3).
async function lockingPlans(metric) {
  const plans = await all('/v1/plans');
  return plans.filter((p) => p.charges.some((c) => c.metric.id === metric.id)).map((p) => p.code);
}

function describeDefinition(m) {
  const a = m.aggregation;
  const rows = [
    ['Event code', m.event_code],
    ['Aggregation', a.type + (a.field ? ` of ${a.field}` : '') + (a.expression ? ` of ${a.expression}` : '') + (a.recurring ? ' (recurring)' : '')],
    ['Filters', m.filters.length ? m.filters.map(describeFilter).join('; ') : 'none'],
    ['Segmentation', describeSegmentation(m.segmentation)],
    ['Group by', m.group_by.length ? m.group_by.join(', ') : 'none'],
    ['Unit conversion', m.unit_conversion ? `÷ ${m.unit_conversion.factor}, rounding ${m.unit_conversion.rounding}` : 'none'],
    ['Rounding', m.rounding ? `${m.rounding.function} to ${m.rounding.precision} places` : 'none'],
  ];
  if (a.query) rows.push(['SQL', h('pre', { class: 'code' }, a.query)]);
  return h('dl', { class: 'definition' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export const describeFilter = (f) =>
  `${f.property} ${f.op.replace('_', ' ')}${f.values.length ? ' ' + f.values.map((v) => JSON.stringify(v)).join(', ') : ''}`;

function describeSegmentation(s) {
  if (!s) return 'none';
  const unmatched = `unmatched: ${s.unmatched}`;
  if (s.type === 'single') return `${s.key} in ${s.values.join(', ')} (${unmatched})`;
  if (s.type === 'double')
    return `${s.dimension1.key} in ${s.dimension1.values.join(', ')} × ${s.dimension2.key} in ${s.dimension2.values.join(', ')} (${unmatched})`;
  return `${s.dimension1_key} → ${s.dimension2_key}: ${Object.entries(s.values).map(([k, v]) => `${k} (${v.join(', ')})`).join('; ')} (${unmatched})`;
}

export async function detail(ctx) {
  const [code] = ctx.params;
  const metric = await api(`/v1/metrics/${enc(code)}`);
  const plans = await lockingPlans(metric);
  if (!ctx.alive()) return;
  ctx.title(metric.name);
  const result = h('div');
  const act = (verb, label) =>
    h('button', {
      type: 'button',
      class: verb === 'delete' ? 'danger' : 'secondary',
      onclick: async () => {
        if (verb === 'delete' && !confirm(`Delete metric ${metric.code}? Its events and revisions stay.`)) return;
        try {
          const path = `/v1/metrics/${enc(metric.id)}` + (verb === 'delete' ? '' : `/${verb}`);
          await api(path, { method: verb === 'delete' ? 'DELETE' : 'POST' });
          announce(`Metric ${metric.code}: ${verb}d`);
          ctx.navigate(verb === 'delete' ? '/console/metrics' : metricUrl(metric), { replace: verb !== 'delete' });
        } catch (error) {
          clear(result, errorBox(error));
        }
      },
    }, label);
  clear(
    ctx.main,
    h('div', { class: 'page-head' }, h('h1', {}, metric.name), h('span', { class: 'badge' }, metric.archived_at ? 'archived' : 'active')),
    h('p', { class: 'meta' }, h('code', {}, metric.code), ` · ${metric.id} · revision ${metric.revision} · updated ${metric.updated_at}`),
    plans.length ? notice(`Charged by plan ${plans.map((p) => `'${p}'`).join(', ')}: ${LOCKED_FIELDS.join(', ')} are locked.`) : null,
    h(
      'nav',
      { class: 'actions', 'aria-label': 'Metric actions' },
      link(`${metricUrl(metric)}/edit`, 'Edit and preview', { class: 'button' }),
      link(`${metricUrl(metric)}/revisions`, 'Revisions', { class: 'button secondary' }),
      link(`/console/usage?metric=${enc(metric.code)}`, 'Usage', { class: 'button secondary' }),
      metric.archived_at ? act('unarchive', 'Unarchive') : act('archive', 'Archive'),
      act('delete', 'Delete'),
    ),
    result,
    h('section', { 'aria-labelledby': 'definition-h' }, h('h2', { id: 'definition-h' }, 'Definition'), describeDefinition(metric)),
  );
}

export async function edit(ctx) {
  const [code] = ctx.params;
  const metric = await api(`/v1/metrics/${enc(code)}`);
  const plans = await lockingPlans(metric);
  if (!ctx.alive()) return;
  ctx.title(`Edit ${metric.name}`);
  const form = metricForm(metric, { locks: plans, editing: true });
  const baseline = form.read();
  const patch = () => mergePatch(baseline, form.read());

  // The preview's question: a period and, optionally, some customers.
  const from = input('from', ctx.query.get('from') || monthStart(0));
  const to = input('to', ctx.query.get('to') || monthStart(1));
  const customers = input('customers', ctx.query.get('customers') || '');
  const previewOut = h('div', { id: 'preview-result', 'aria-live': 'polite' });
  const saveOut = h('div');
  const save = h('button', { type: 'submit' }, 'Save as a new revision');
  let asked = 0;

  const runPreview = async () => {
    const body = patch();
    const ticket = ++asked;
    if (!Object.keys(body).length) {
      form.showProblems(null);
      clear(previewOut, notice('No change yet: edit the definition to see its effect on each customer.'));
      return;
    }
    const request = { patch: body, from: instant(from.value), to: instant(to.value) };
    const named = customers.value.split(',').map((s) => s.trim()).filter(Boolean);
    if (named.length) request.customers = named;
    previewOut.setAttribute('aria-busy', 'true');
    try {
      const answer = await api(`/v1/metrics/${enc(metric.id)}/preview`, { method: 'POST', body: request });
      if (ticket !== asked || !ctx.alive()) return;
      form.showProblems(null);
      clear(previewOut, renderPreview(answer, plans));
      announce(`Preview updated for ${answer.results.length} customers`);
    } catch (error) {
      if (ticket !== asked || !ctx.alive()) return;
      if (error.status === 422 && error.details.length) form.showProblems(error);
      clear(previewOut, errorBox(error));
    } finally {
      if (ticket === asked) previewOut.removeAttribute('aria-busy');
    }
  };
  const later = debounce(runPreview, 350);
  form.onChange(later);
  for (const control of [from, to, customers]) control.addEventListener('input', later);

  const element = h('form', { class: 'card', novalidate: true }, form.element, saveOut, h('div', { class: 'actions' }, save, link(metricUrl(metric), 'Cancel', { class: 'button secondary' })));
  element.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = patch();
    if (!Object.keys(body).length) {
      clear(saveOut, notice('Nothing changed.'));
      return;
    }
    save.disabled = true;
    try {
      const saved = await api(`/v1/metrics/${enc(metric.id)}`, { method: 'PATCH', body: { ...body, revision: metric.revision } });
      announce(`Saved revision ${saved.revision}`);
      ctx.navigate(`${metricUrl(saved)}/revisions`);
    } catch (error) {
      form.showProblems(error.status === 422 ? error : null);
      clear(saveOut, errorBox(error));
      saveOut.scrollIntoView({ block: 'nearest' });
    } finally {
      save.disabled = false;
    }
  });

  clear(
    ctx.main,
    h('h1', {}, `Edit ${metric.name}`),
    h('p', { class: 'meta' }, h('code', {}, metric.code), ` · revision ${metric.revision}. Saving makes revision ${metric.revision + 1}; nothing is saved before.`),
    h(
      'div',
      { class: 'edit-layout' },
      element,
      h(
        'section',
        { class: 'card preview', 'aria-labelledby': 'preview-h' },
        h('h2', { id: 'preview-h' }, 'Preview of the change'),
        h('p', { class: 'hint' }, 'Each customer’s usage over the period under the current and the proposed definition, computed by the server from the stored events, and the charges that would change.'),
        h('div', { class: 'row' }, field('From', from, { hint: 'A date (UTC) or RFC 3339' }), field('To', to), field('Customers', customers, { hint: 'Comma-separated; all when empty' })),
        previewOut,
      ),
    ),
  );
  runPreview();
}

function renderPreview(answer, plans) {
  const parts = [];
  parts.push(h('h3', {}, 'What changes'), changeList(answer.changes));
  if (answer.locked_fields.length) {
    const by = plans.length ? `plan ${plans.map((p) => `'${p}'`).join(', ')}` : 'a plan';
    parts.push(
      notice(
        answer.would_be_refused
          ? `Saving would be refused: ${answer.locked_fields.join(', ')} ${answer.locked_fields.length === 1 ? 'is' : 'are'} locked by ${by}.`
          : `Changes locked fields (${answer.locked_fields.join(', ')}); allowed, since no plan charges this metric.`,
        answer.would_be_refused ? 'warning' : 'info',
      ),
    );
  }
  parts.push(
    answer.results.length
      ? table(
          `Usage ${answer.from} to ${answer.to}, by size of change`,
          ['Customer', 'Current', 'Proposed', 'Difference'],
          answer.results.map((r) => [r.customer, shown(r.current), shown(r.proposed), shown(r.difference)]),
          { id: 'preview-table' },
        )
      : notice('No customers to preview.'),
  );
  const amounts = answer.results.flatMap((r) => r.amounts.map((a) => [r.customer, a]));
  if (amounts.length) {
    parts.push(
      table(
        'Charges on this metric',
        ['Customer', 'Subscription', 'Plan', 'Current', 'Proposed', 'Difference'],
        amounts.map(([customer, a]) => [customer, a.subscription, a.plan, `${a.current} ${a.currency}`, `${a.proposed} ${a.currency}`, `${a.difference} ${a.currency}`]),
        { id: 'preview-amounts' },
      ),
    );
  }
  return parts;
}

// A readable diff: each changed path with its value before and after.
export function changeList(changes) {
  if (!changes.length) return h('p', {}, 'Nothing.');
  return h(
    'ul',
    { class: 'changes' },
    changes.map((c) =>
      h('li', {}, h('code', {}, c.path), ': ', h('del', {}, readable(c.path, c.before)), ' → ', h('ins', {}, readable(c.path, c.after))),
    ),
  );
}

function readable(path, value) {
  if (value === null || value === undefined) return 'none';
  if (path === 'filters' && Array.isArray(value)) return value.length ? value.map(describeFilter).join('; ') : 'no filters';
  if (typeof value === 'string') return value;
  return json(value);
}

export async function revisions(ctx) {
  const [code] = ctx.params;
  const metric = await api(`/v1/metrics/${enc(code)}`);
  const answer = await api(`/v1/metrics/${enc(metric.id)}/revisions`);
  if (!ctx.alive()) return;
  ctx.title(`Revisions of ${metric.name}`);
  const revisionsList = (answer.data || answer).slice().sort((a, b) => b.revision - a.revision);
  const chosen = Number(ctx.query.get('revision') || 0);
  const shownDefinition = h('section', { 'aria-labelledby': 'rev-def-h' });
  if (chosen) {
    try {
      const revision = await api(`/v1/metrics/${enc(metric.id)}/revisions/${chosen}`);
      clear(shownDefinition, h('h2', { id: 'rev-def-h' }, `Definition at revision ${revision.revision}`), describeDefinition(revision.definition), h('details', {}, h('summary', {}, 'As JSON'), pre(revision.definition)));
    } catch (error) {
      clear(shownDefinition, errorBox(error));
    }
  }
  clear(
    ctx.main,
    h('h1', {}, `Revisions of ${metric.name}`),
    h('p', { class: 'meta' }, link(metricUrl(metric), metric.code), ` · current revision ${metric.revision}`),
    h(
      'ol',
      { class: 'timeline', reversed: true, id: 'revisions' },
      revisionsList.map((r) =>
        h(
          'li',
          { 'data-revision': r.revision },
          h('h2', {}, `Revision ${r.revision}`, r.revision === metric.revision ? ' (current)' : ''),
          h('p', { class: 'meta' }, h('time', { datetime: r.effective_at }, r.effective_at)),
          r.revision === 1 ? h('p', {}, 'Created.') : changeList(r.changes),
          link(`${metricUrl(metric)}/revisions?revision=${r.revision}`, `Show the definition of revision ${r.revision}`),
        ),
      ),
    ),
    shownDefinition,
  );
  if (chosen) shownDefinition.scrollIntoView({ block: 'start' });
}

export { ApiError };
