// Events: the stored events with filters, one event's detail, and explain (POST
// /v1/events/explain): which metrics read an event, each filter, its segment, its value, and
// why it does not count.

import { api, all } from './api.js';
import { h, clear, field, select, input, table, link, errorBox, notice, shown, json, pre, instant } from './ui.js';
import { describeFilter } from './metrics.js';

const enc = encodeURIComponent;
const eventUrl = (e) => `/console/events/view?customer=${enc(e.customer)}&transaction_id=${enc(e.transaction_id)}`;

export async function list(ctx) {
  ctx.title('Events');
  const q = ctx.query;
  const values = { customer: q.get('customer') || '', code: q.get('code') || '', from: q.get('from') || '', to: q.get('to') || '' };
  const controls = Object.fromEntries(Object.entries(values).map(([k, v]) => [k, input(k, v)]));
  const form = h(
    'form',
    { class: 'filters', role: 'search' },
    field('Customer', controls.customer),
    field('Event code', controls.code),
    field('From', controls.from, { hint: 'A date (UTC) or RFC 3339' }),
    field('To', controls.to),
    h('button', { type: 'submit' }, 'Filter'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const params = new URLSearchParams(Object.entries(controls).map(([k, c]) => [k, c.value.trim()]).filter(([, v]) => v));
    ctx.navigate(`/console/events?${params}`);
  });
  const query = {
    customer: values.customer,
    code: values.code,
    from: values.from && instant(values.from),
    to: values.to && instant(values.to),
    limit: 100,
    cursor: q.get('cursor') || undefined,
  };
  const answer = await api('/v1/events', { query });
  if (!ctx.alive()) return;
  const rows = answer.data.map((e) => [
    link(eventUrl(e), e.transaction_id),
    e.customer,
    e.code,
    h('time', { datetime: e.timestamp }, e.timestamp),
    h('code', {}, abbreviate(json(e.properties))),
    String(e.sequence),
  ]);
  const next = answer.next_cursor
    ? link(`/console/events?${new URLSearchParams({ ...Object.fromEntries(Object.entries(values).filter(([, v]) => v)), cursor: answer.next_cursor })}`, 'Next page', { class: 'button secondary' })
    : null;
  clear(
    ctx.main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Events'), link('/console/explain', 'Explain an event', { class: 'button secondary' })),
    form,
    rows.length
      ? table(`Events in ingestion order (${rows.length} on this page)`, ['Transaction id', 'Customer', 'Code', 'Timestamp', 'Properties', 'Sequence'], rows, { id: 'events-table' })
      : notice('No events match.'),
    h('div', { class: 'actions' }, next),
  );
}

const abbreviate = (text) => (text.length > 80 ? text.slice(0, 77) + '…' : text);

export async function detail(ctx) {
  const customer = ctx.query.get('customer') || '';
  const transactionId = ctx.query.get('transaction_id') || '';
  const event = await api(`/v1/events/${enc(transactionId)}`, { query: { customer } });
  const explanation = await api('/v1/events/explain', { method: 'POST', body: { customer, transaction_id: transactionId } });
  if (!ctx.alive()) return;
  ctx.title(`Event ${transactionId}`);
  clear(
    ctx.main,
    h('h1', {}, `Event ${transactionId}`),
    h(
      'dl',
      { class: 'definition' },
      [['Customer', link(`/console/customers/${enc(event.customer)}`, event.customer)], ['Code', event.code], ['Timestamp', event.timestamp], ['Ingested at', event.ingested_at], ['Sequence', String(event.sequence)]].map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
    ),
    h('h2', {}, 'Properties'),
    pre(event.properties),
    h('section', { 'aria-labelledby': 'explain-h' }, h('h2', { id: 'explain-h' }, 'Does it count?'), renderExplanation(explanation)),
  );
}

export async function explainPage(ctx) {
  ctx.title('Explain an event');
  const metrics = await all('/v1/metrics', { archived: 'all' });
  if (!ctx.alive()) return;
  const q = ctx.query;
  const source = select('source', [['pasted', 'An event pasted as JSON'], ['stored', 'A stored event']], q.get('customer') ? 'stored' : 'pasted');
  const pasted = h('textarea', { name: 'event', rows: 8, class: 'code', spellcheck: 'false' },
    '{"transaction_id": "t-1", "code": "api_calls", "customer": "acme", "properties": {}}');
  const customer = input('customer', q.get('customer') || '');
  const transactionId = input('transaction_id', q.get('transaction_id') || '');
  const metric = select('metric', [['', 'Every metric reading its code'], ...metrics.map((m) => [m.code, `${m.name} (${m.code})`])], '');
  const pastedField = field('Event (JSON, as POST /v1/events takes it)', pasted, { hint: 'Checked as ingestion would check it; nothing is stored.' });
  const stored = h('div', { class: 'row' }, field('Customer', customer), field('Transaction id', transactionId));
  const show = () => {
    pastedField.hidden = source.value !== 'pasted';
    stored.hidden = source.value !== 'stored';
  };
  source.addEventListener('change', show);
  show();
  const out = h('div', { id: 'explain-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'card' }, field('Which event', source), pastedField, stored, field('Metric', metric), h('button', { type: 'submit' }, 'Explain'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    let body;
    if (source.value === 'pasted') {
      try {
        body = { event: JSON.parse(pasted.value) };
      } catch (error) {
        clear(out, errorBox({ code: 'malformed_json', message: `the event is not valid JSON: ${error.message}` }));
        pasted.setAttribute('aria-invalid', 'true');
        return;
      }
      pasted.removeAttribute('aria-invalid');
    } else {
      body = { customer: customer.value.trim(), transaction_id: transactionId.value.trim() };
    }
    if (metric.value) body.metric = metric.value;
    try {
      clear(out, renderExplanation(await api('/v1/events/explain', { method: 'POST', body })));
    } catch (error) {
      clear(out, errorBox(error));
    }
  });
  clear(ctx.main, h('h1', {}, 'Explain an event'), h('p', {}, 'Which metrics read an event, whether it passes each filter, the segment it lands in, the value it contributes, and why not when it does not count. The server reads the event exactly as it computes usage.'), form, out);
  if (q.get('customer') && q.get('transaction_id')) form.requestSubmit();
}

const OUTCOMES = {
  counted: 'Counts',
  skipped: 'Does not count: no value',
  excluded_by_segmentation: 'Does not count: excluded by the segmentation',
  filtered_out: 'Does not count: filtered out',
  other_code: 'Does not count: another event code',
  decided_by_sql: 'Decided by the SQL query',
};

export function renderExplanation(x) {
  const e = x.event;
  const parts = [];
  const ingestion = x.ingestion.status === 'stored'
    ? `Stored (sequence ${e.sequence}, ingested ${e.ingested_at}).`
    : x.ingestion.status === 'would_be_accepted'
      ? 'Not stored. Ingestion would accept it.'
      : `Not stored. Ingestion would reject it: ${x.ingestion.error.code}: ${x.ingestion.error.message}.`;
  parts.push(notice(ingestion, x.ingestion.status === 'would_be_rejected' ? 'warning' : 'info'));
  if (!x.metrics.length) {
    parts.push(h('p', { class: 'verdict no', 'data-outcome': 'no_metric' }, `No metric reads the event code '${e.code}', so it counts nowhere.`));
    return h('div', { class: 'explanation' }, parts);
  }
  for (const m of x.metrics) {
    const filters = m.filters.length
      ? table(
          `Filters of ${m.metric.code}`,
          ['Filter', 'The event has', 'Passes'],
          m.filters.map((f, i) => [`${i + 1}. ${describeFilter(f)}`, f.present ? json(f.found) : 'nothing', f.passes ? '✓ yes' : '✗ no']),
        )
      : h('p', {}, 'No filters.');
    const segment = m.segment.placement === 'none'
      ? 'no segmentation'
      : m.segment.placement === 'matched'
        ? Object.entries(m.segment.segment).map(([k, v]) => `${k}=${v}`).join(', ')
        : m.segment.placement === 'other' ? 'other (outside the matrix)' : 'dropped (outside the matrix)';
    const groupBy = Object.entries(m.group_by).map(([k, v]) => `${k}=${v === null ? '(none)' : v}`).join(', ') || 'none';
    parts.push(
      h(
        'article',
        { class: 'metric-explanation ' + (m.counts ? 'yes' : 'no'), 'data-metric': m.metric.code, 'data-outcome': m.outcome },
        h('h3', {}, link(`/console/metrics/${enc(m.metric.code)}`, m.metric.name), ` (${m.metric.code}, ${m.metric.aggregation}, revision ${m.metric.revision}${m.metric.archived ? ', archived' : ''})`),
        h('p', { class: 'verdict ' + (m.counts ? 'yes' : 'no') }, h('strong', {}, OUTCOMES[m.outcome] || m.outcome)),
        m.reason ? h('p', { class: 'reason', 'data-reason': m.reason.code }, h('strong', {}, 'Why: '), m.reason.message) : null,
        h(
          'dl',
          { class: 'definition' },
          [
            ['Reads its code', m.reads_code ? 'yes' : `no (reads '${m.metric.event_code}')`],
            ['Segment', segment],
            ['Group by', groupBy],
            ['Value', m.value === null ? 'none' : shown(m.value) + (m.operation ? ` (${m.operation})` : '') + (m.counts ? '' : ' (would contribute, but does not count)')],
          ].map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
        ),
        filters,
      ),
    );
  }
  return h('div', { class: 'explanation' }, parts);
}

export { eventUrl };
