// Usage: a metric's usage over time from GET /v1/usage (window, time zone, group by, one
// customer or the top customers), as an SVG chart with the same numbers in a table beside it
// and as a CSV download.

import { api, all } from './api.js';
import { h, clear, field, select, input, table, errorBox, notice, shown, instant, monthStart } from './ui.js';
import { lineChart } from './chart.js';

const ZONES = ['UTC', 'Europe/London', 'Europe/Paris', 'Europe/Berlin', 'America/New_York', 'America/Chicago', 'America/Los_Angeles', 'Asia/Kolkata', 'Asia/Tokyo', 'Australia/Sydney'];
const TOP = 'top';

export async function page(ctx) {
  ctx.title('Usage');
  const metrics = await all('/v1/metrics', { archived: 'all' });
  const customers = await all('/v1/customers');
  if (!ctx.alive()) return;
  const q = ctx.query;
  if (!metrics.length) {
    clear(ctx.main, h('h1', {}, 'Usage'), notice('No metrics yet: create one first.'));
    return;
  }
  const chosenMetric = metrics.find((m) => m.code === q.get('metric')) || metrics[0];
  const metric = select('metric', metrics.map((m) => [m.code, `${m.name} (${m.code})`]), chosenMetric.code);
  const customer = select('customer', [[TOP, 'Top customers'], ...customers.map((c) => [c.external_id, c.name ? `${c.name} (${c.external_id})` : c.external_id])], q.get('customer') || TOP);
  const top = input('top', q.get('top') || '5', { inputmode: 'numeric' });
  const from = input('from', q.get('from') || monthStart(0));
  const to = input('to', q.get('to') || monthStart(1));
  const windowSize = select('window', [['day', 'Day'], ['hour', 'Hour']], q.get('window') || 'day');
  const timezone = input('timezone', q.get('timezone') || 'UTC', { list: 'zones' });
  const groupByOptions = () => {
    const m = metrics.find((x) => x.code === metric.value);
    return [['', 'No grouping'], ...m.group_by.map((k) => [k, k])];
  };
  const groupBy = select('group_by', groupByOptions(), q.get('group_by') || '');
  metric.addEventListener('change', () => {
    clear(groupBy, groupByOptions().map(([v, t]) => h('option', { value: v }, t)));
  });
  const form = h(
    'form',
    { class: 'filters wide' },
    field('Metric', metric),
    field('Customer', customer),
    field('How many top customers', top),
    field('From', from, { hint: 'A date (UTC) or RFC 3339' }),
    field('To', to),
    field('Window', windowSize),
    field('Time zone', timezone, { hint: 'IANA name' }),
    h('datalist', { id: 'zones' }, ZONES.map((z) => h('option', { value: z }))),
    field('Group by', groupBy, { hint: 'One customer only' }),
    h('button', { type: 'submit' }, 'Show usage'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const params = new URLSearchParams({
      metric: metric.value,
      customer: customer.value,
      top: top.value,
      from: from.value,
      to: to.value,
      window: windowSize.value,
      timezone: timezone.value,
      group_by: groupBy.value,
    });
    ctx.navigate(`/console/usage?${params}`);
  });
  const out = h('div', { id: 'usage-result', 'aria-live': 'polite' });
  clear(ctx.main, h('h1', {}, 'Usage'), form, out);
  if (!q.get('metric')) {
    clear(out, notice('Choose a metric and a period, then “Show usage”.'));
    return;
  }

  const question = {
    metric: metric.value,
    from: instant(from.value),
    to: instant(to.value),
    window: windowSize.value,
    timezone: timezone.value,
  };
  try {
    const model = customer.value === TOP
      ? await topCustomers(question, Math.max(1, Number.parseInt(top.value, 10) || 5))
      : await oneCustomer(question, customer.value, groupBy.value);
    if (!ctx.alive()) return;
    clear(out, renderModel(model, chosenMetric));
  } catch (error) {
    if (ctx.alive()) clear(out, errorBox(error));
  }
}

// What the chart, the table and the CSV show: windows and series of decimal strings.
async function oneCustomer(question, customer, groupBy) {
  const answer = await api('/v1/usage', { query: { ...question, customer, group_by: groupBy } });
  const windows = answer.windows.map(windowLabel(question.window));
  const series = [{ id: 'total', name: 'Total', values: answer.windows.map((w) => w.total) }];
  const keys = new Map();
  for (const w of answer.windows) for (const g of w.groups) keys.set(groupName(g), g);
  const grouped = keys.size > 1 || [...keys.values()].some((g) => g.segment !== null || Object.keys(g.group_by).length);
  if (grouped) {
    for (const name of keys.keys()) {
      series.push({
        id: 'group:' + name,
        name,
        values: answer.windows.map((w) => {
          const g = w.groups.find((x) => groupName(x) === name);
          return g ? g.value : null;
        }),
      });
    }
  }
  return { title: `${answer.metric.code} for ${customer}`, windows, series, answer: [answer] };
}

// The customers with the largest usage over the whole period (the API's total for the period),
// each one a series of its window totals.
async function topCustomers(question, count) {
  const period = await all('/v1/usage', { ...question, window: 'none', group_by: '' });
  const ranked = period
    .map((u) => ({ customer: u.customer, total: u.windows[0] ? u.windows[0].total : null }))
    .filter((u) => u.total !== null && Number(u.total) !== 0)
    .sort((a, b) => Number(b.total) - Number(a.total) || a.customer.localeCompare(b.customer))
    .slice(0, count);
  const answers = [];
  for (const { customer } of ranked) {
    answers.push(await api('/v1/usage', { query: { ...question, customer, group_by: '' } }));
  }
  const windows = (answers[0] ? answers[0].windows : []).map(windowLabel(question.window));
  const series = answers.map((a) => ({ id: 'customer:' + a.customer, name: a.customer, values: a.windows.map((w) => w.total) }));
  return { title: `${question.metric}: top ${ranked.length} customers`, windows, series, answer: answers };
}

const windowLabel = (size) => (w) => ({
  from: w.from,
  to: w.to,
  label: size === 'hour' ? w.from.slice(5, 16).replace('T', ' ') : w.from.slice(0, 10),
});

function groupName(g) {
  const parts = [];
  if (g.segment === 'other') parts.push('other');
  else if (g.segment) parts.push(...Object.entries(g.segment).map(([k, v]) => `${k}=${v}`));
  parts.push(...Object.entries(g.group_by).map(([k, v]) => `${k}=${v === null ? '(none)' : v}`));
  return parts.join(', ') || 'all';
}

function renderModel(model, metric) {
  if (!model.series.length || !model.windows.length) return notice('No usage in this period.');
  const rows = model.windows.map((w, i) => [w.label, ...model.series.map((s) => shown(s.values[i]))]);
  const csv = toCsv(model);
  const download = h('a', {
    class: 'button secondary',
    download: `${metric.code}-usage.csv`,
    href: URL.createObjectURL(new Blob([csv], { type: 'text/csv' })),
  }, 'Download CSV');
  const path = [...new Set(model.answer.map((a) => a.answered_from + (a.events_reason ? ` (${a.events_reason})` : '')))].join(', ');
  return [
    h(
      'div',
      { class: 'usage-layout' },
      lineChart({ title: model.title, windows: model.windows, series: model.series }),
      table(model.title, ['Window', ...model.series.map((s) => s.name)], rows, { id: 'usage-table' }),
    ),
    h('div', { class: 'actions' }, download),
    h('p', { class: 'hint' }, `Values as GET /v1/usage answered them (revision ${model.answer[0] ? model.answer[0].metric.revision : '?'}, computed from ${path}).`),
  ];
}

function toCsv(model) {
  const quote = (v) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const lines = [['window_from', 'window_to', ...model.series.map((s) => s.name)].map(quote).join(',')];
  model.windows.forEach((w, i) => {
    lines.push([w.from, w.to, ...model.series.map((s) => (s.values[i] === null ? '' : s.values[i]))].map(quote).join(','));
  });
  return lines.join('\n') + '\n';
}
