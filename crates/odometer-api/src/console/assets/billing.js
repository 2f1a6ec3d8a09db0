// Customers, plans and subscriptions (read views), and a subscription's current usage with
// its amounts (GET /v1/subscriptions/{id}/usage).

import { api, all } from './api.js';
import { h, clear, field, input, table, link, notice, shown, json, pre } from './ui.js';

const enc = encodeURIComponent;
const definitionList = (rows) => h('dl', { class: 'definition' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));

export async function customers(ctx) {
  ctx.title('Customers');
  const search = ctx.query.get('search') || '';
  const found = await all('/v1/customers', { search });
  if (!ctx.alive()) return;
  const searchInput = input('search', search, { type: 'search' });
  const form = h('form', { class: 'filters', role: 'search' }, field('Search', searchInput), h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    ctx.navigate(`/console/customers?${new URLSearchParams({ search: searchInput.value })}`);
  });
  clear(
    ctx.main,
    h('h1', {}, 'Customers'),
    form,
    found.length
      ? table(`${found.length} customers`, ['External id', 'Name', 'Email', 'Time zone', 'Created'],
          found.map((c) => [link(`/console/customers/${enc(c.external_id)}`, c.external_id), shown(c.name), shown(c.email), c.timezone || 'UTC', c.created_at]),
          { id: 'customers-table' })
      : notice('No customers.'),
  );
}

export async function customer(ctx) {
  const [externalId] = ctx.params;
  const c = await api(`/v1/customers/${enc(externalId)}`);
  const subscriptions = await all('/v1/subscriptions', { customer: externalId });
  if (!ctx.alive()) return;
  ctx.title(c.name || c.external_id);
  clear(
    ctx.main,
    h('h1', {}, c.name || c.external_id),
    definitionList([['External id', c.external_id], ['Id', c.id], ['Email', c.email], ['Time zone', c.timezone || 'UTC'], ['Created', c.created_at]]),
    h('nav', { class: 'actions', 'aria-label': 'Customer links' },
      link(`/console/events?customer=${enc(c.external_id)}`, 'Events', { class: 'button secondary' }),
      link(`/console/usage?customer=${enc(c.external_id)}`, 'Usage', { class: 'button secondary' })),
    h('h2', {}, 'Metadata'),
    pre(c.metadata),
    h('h2', {}, 'Subscriptions'),
    subscriptionTable(subscriptions),
  );
}

function subscriptionTable(subscriptions) {
  return subscriptions.length
    ? table(`${subscriptions.length} subscriptions`, ['External id', 'Customer', 'Plan', 'Status', 'Started', 'Ends'],
        subscriptions.map((s) => [link(`/console/subscriptions/${enc(s.external_id)}`, s.external_id), s.customer, link(`/console/plans/${enc(s.plan.code)}`, s.plan.code), s.status, s.started_at, shown(s.ended_at)]),
        { id: 'subscriptions-table' })
    : notice('No subscriptions.');
}

export async function plans(ctx) {
  ctx.title('Plans');
  const found = await all('/v1/plans');
  if (!ctx.alive()) return;
  clear(
    ctx.main,
    h('h1', {}, 'Plans'),
    found.length
      ? table(`${found.length} plans`, ['Code', 'Name', 'Interval', 'Base amount', 'Charges'],
          found.map((p) => [link(`/console/plans/${enc(p.code)}`, p.code), p.name, p.interval, `${p.amount} ${p.currency}`, p.charges.map((c) => c.metric.code).join(', ') || 'none']),
          { id: 'plans-table' })
      : notice('No plans.'),
  );
}

export async function plan(ctx) {
  const [code] = ctx.params;
  const p = await api(`/v1/plans/${enc(code)}`);
  if (!ctx.alive()) return;
  ctx.title(p.name);
  clear(
    ctx.main,
    h('h1', {}, p.name),
    definitionList([['Code', p.code], ['Id', p.id], ['Interval', p.interval], ['Base amount', `${p.amount} ${p.currency}`], ['Paid in advance', p.pay_in_advance ? 'yes' : 'no'], ['Description', p.description]]),
    h('h2', {}, 'Charges'),
    p.charges.length
      ? table('Charges', ['Metric', 'Model', 'Properties', 'Filters', 'Pricing groups'],
          p.charges.map((c) => [link(`/console/metrics/${enc(c.metric.code)}`, c.metric.code), c.charge_model, h('code', {}, json(c.properties)), c.filters.length ? c.filters.map((f) => json(f.values)).join('; ') : 'none', c.pricing_group_keys.join(', ') || 'none']),
          { id: 'charges-table' })
      : notice('No charges.'),
  );
}

export async function subscriptions(ctx) {
  ctx.title('Subscriptions');
  const found = await all('/v1/subscriptions');
  if (!ctx.alive()) return;
  clear(ctx.main, h('h1', {}, 'Subscriptions'), subscriptionTable(found));
}

export async function subscription(ctx) {
  const [externalId] = ctx.params;
  const s = await api(`/v1/subscriptions/${enc(externalId)}`);
  let usage = null;
  let usageError = null;
  try {
    usage = await api(`/v1/subscriptions/${enc(externalId)}/usage`);
  } catch (error) {
    usageError = error;
  }
  if (!ctx.alive()) return;
  ctx.title(`Subscription ${s.external_id}`);
  const current = usage
    ? [
        h('p', { class: 'meta' }, `Billing period ${usage.from} to ${usage.to} (${usage.timezone}), as of ${usage.as_of}.`),
        table('Charges this period', ['Metric', 'Model', 'Units', 'Events', 'Amount'],
          usage.charges.map((c) => [link(`/console/metrics/${enc(c.metric.code)}`, `${c.metric.code} (rev. ${c.metric.revision})`), c.charge_model, c.units, String(c.events_count), `${c.amount} ${usage.currency}`]),
          { id: 'current-usage-table' }),
        h('p', { class: 'total' }, h('strong', {}, 'Charges total: '), `${usage.amount} ${usage.currency}`, ' (the plan’s base amount is not included)'),
        usage.charges.some((c) => c.buckets.length > 1 || c.buckets.some((b) => b.filter || Object.keys(b.group).length))
          ? h('details', {}, h('summary', {}, 'Buckets'), pre(usage.charges.map((c) => ({ metric: c.metric.code, buckets: c.buckets }))))
          : null,
      ]
    : notice(`No current usage: ${usageError.message}`);
  clear(
    ctx.main,
    h('h1', {}, `Subscription ${s.external_id}`),
    definitionList([
      ['Customer', link(`/console/customers/${enc(s.customer)}`, s.customer)],
      ['Plan', link(`/console/plans/${enc(s.plan.code)}`, s.plan.code)],
      ['Status', s.status],
      ['Started', s.started_at],
      ['Ends', s.ended_at],
      ['Billing anchor', s.billing_anchor],
      ['Time zone', s.timezone],
    ]),
    h('section', { 'aria-labelledby': 'current-h' }, h('h2', { id: 'current-h' }, 'Current usage'), current),
  );
}
