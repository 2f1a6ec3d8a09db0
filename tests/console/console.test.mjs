// The console in headless Chromium against a real `odometer serve`: every number the console
// shows is checked against what the native API answers for the same question.
// Screenshots of each page go to $CONSOLE_SCREENSHOTS (tests/console/run prints the folder).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer, client } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const shots = process.env.CONSOLE_SCREENSHOTS || fs.mkdtempSync(path.join(os.tmpdir(), 'odometer-console-shots-'));

let server;
let api; // the first organization's key, straight to the API
let otherApi;
let context;
let page;
const pageErrors = [];

// The period every question uses: three whole UTC days up to the end of today.
const DAY = 86400000;
const today = new Date(Math.floor(Date.now() / DAY) * DAY);
const from = new Date(today.getTime() - 2 * DAY).toISOString().slice(0, 10);
const to = new Date(today.getTime() + DAY).toISOString().slice(0, 10);
const at = (daysAgo, hour) => new Date(today.getTime() - daysAgo * DAY + hour * 3600000).toISOString();
const fromTs = `${from}T00:00:00Z`;
const toTs = `${to}T00:00:00Z`;

async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function visit(url) {
  await page.goto(server.baseUrl + url);
  await page.waitForSelector('main h1');
}

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`Chromium is required at ${CHROMIUM} (apt-get install -y chromium chromium-driver; .ci/run installs it)`);
  }
  fs.mkdirSync(shots, { recursive: true });
  console.log(`# screenshots: ${shots}`);
  server = await startServer();
  api = client(server.baseUrl, server.first.key);
  otherApi = client(server.baseUrl, server.other.key);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'odometer-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  // Customers exist before events name them (semantics 2.3).
  for (const id of ['acme', 'globex', 'initech']) {
    const answer = await api('POST', '/v1/customers', { external_id: id, name: id[0].toUpperCase() + id.slice(1) });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
  }
});

after(async () => {
  if (context) await context.close();
  if (server) server.stop();
  console.log(`# screenshots: ${shots}`);
});

test('sign in with an API key kept in the tab session only', async () => {
  await page.goto(server.baseUrl + '/console/');
  await page.waitForURL('**/console/sign-in');
  assert.equal(await page.locator('#nav').isHidden(), true, 'no navigation before signing in');
  await page.getByLabel('API key').fill(server.first.key);
  await shot('01-sign-in');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/console/metrics');
  await page.waitForSelector('main h1:text("Metrics")');
  assert.match(await page.locator('#organization').textContent(), /Console suite/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('odometer.key')), server.first.key);
  assert.deepEqual(await context.cookies(), [], 'no cookie holds the key');
  assert.ok(!page.url().includes(server.first.key), 'the key is not in the URL');
  const log = fs.readFileSync(path.join(server.dataDir, 'server.log'), 'utf8');
  assert.ok(!log.includes(server.first.key), 'the key is not in the server log');
});

test('create a metric from the form, and see the SQL validator point at the problem', async () => {
  await visit('/console/metrics/new');
  await page.getByLabel('Code', { exact: true }).fill('transfer');
  await page.getByLabel('Name', { exact: true }).fill('Data transfer');
  await page.getByLabel('Type', { exact: true }).selectOption('sum');
  await page.getByLabel('Field (property path)').fill('bytes');
  await page.getByLabel('Segmentation', { exact: true }).selectOption('single');
  await page.getByLabel('Key', { exact: true }).fill('region');
  await page.locator('.field:has(input[name="segmentation.values"])').getByLabel('Values').fill('eu, us');
  await page.getByLabel('Group by').fill('project');
  await shot('02-metric-new');
  await page.getByRole('button', { name: 'Create metric' }).click();
  await page.waitForURL('**/console/metrics/transfer');
  await page.waitForSelector('main h1:text("Data transfer")');
  await shot('03-metric-detail');
  const created = await api('GET', '/v1/metrics/transfer');
  assert.equal(created.status, 200);
  assert.deepEqual(created.body.aggregation, { type: 'sum', field: 'bytes', recurring: false, expression: null });
  assert.deepEqual(created.body.segmentation, { type: 'single', key: 'region', values: ['eu', 'us'], unmatched: 'other' });
  assert.deepEqual(created.body.group_by, ['project']);
  assert.equal(created.body.revision, 1);

  // A SQL metric with a problem on its third line: the console shows the validator's line and
  // column, where the API puts them.
  const sql = 'SELECT count(*) AS value\nFROM events\nWHERE read_csv(1) > 0';
  const refused = await api('POST', '/v1/metrics', { code: 'bad_sql', name: 'Bad', aggregation: { type: 'custom_sql', query: sql } });
  assert.equal(refused.status, 422);
  const detail = refused.body.error.details.find((d) => d.code === 'invalid_sql');
  const [, line, column] = /\(line (\d+), column (\d+)\)/.exec(detail.message);
  await visit('/console/metrics/new');
  await page.getByLabel('Code', { exact: true }).fill('bad_sql');
  await page.getByLabel('Name', { exact: true }).fill('Bad');
  await page.getByLabel('Type', { exact: true }).selectOption('custom_sql');
  await page.getByLabel('SQL query').fill(sql);
  await page.getByRole('button', { name: 'Create metric' }).click();
  const caret = page.locator('pre.sql-caret');
  await caret.waitFor();
  assert.equal(await caret.getAttribute('data-line'), line);
  assert.equal(await caret.getAttribute('data-column'), column);
  const caretText = await caret.textContent();
  assert.equal(caretText.split('\n')[0], sql.split('\n')[Number(line) - 1]);
  assert.equal(caretText.split('\n')[1].indexOf('^'), Number(column) - 1);
  assert.equal(await page.getByLabel('SQL query').getAttribute('aria-invalid'), 'true');
  await shot('04-metric-sql-problem');
  assert.equal((await api('GET', '/v1/metrics/bad_sql')).status, 404, 'nothing was created');
});

test('send events through the API and see them in the events list', async () => {
  const events = [
    ['acme', 't-1', at(2, 3), { bytes: 100, region: 'eu', project: 'web', tier: 'pro' }],
    ['acme', 't-2', at(2, 9), { bytes: 50, region: 'us', project: 'api', tier: 'free' }],
    ['acme', 't-3', at(1, 4), { bytes: 25.5, region: 'ap', project: 'web', tier: 'pro' }],
    ['acme', 't-4', at(0, 0), { bytes: 7, region: 'eu', project: 'api', tier: 'free' }],
    ['acme', 't-5', at(0, 0), { region: 'eu', project: 'api', tier: 'pro' }],
    ['globex', 'g-1', at(1, 2), { bytes: 1000, region: 'us', project: 'etl', tier: 'pro' }],
    ['globex', 'g-2', at(0, 0), { bytes: 300, region: 'us', project: 'etl', tier: 'free' }],
    ['initech', 'i-1', at(2, 1), { bytes: 5, region: 'eu', tier: 'pro' }],
  ].map(([customer, transaction_id, timestamp, properties]) => ({ transaction_id, code: 'transfer', customer, timestamp, properties }));
  const answer = await api('POST', '/v1/events', { events });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  assert.equal(answer.body.accepted, events.length);
  await visit('/console/events?customer=acme');
  const rows = page.locator('#events-table tbody tr');
  assert.equal(await rows.count(), 5);
  assert.deepEqual(await page.locator('#events-table tbody tr th').allTextContents(), ['t-1', 't-2', 't-3', 't-4', 't-5']);
  await shot('05-events');
  await page.getByRole('link', { name: 't-5' }).click();
  await page.waitForSelector('main h1:text("Event t-5")');
  await page.waitForSelector('.metric-explanation[data-metric="transfer"]');
  await shot('06-event-detail');
});

// The chart's points and the table's cells for each series, by window.
async function chartSeries(id) {
  return page.locator(`svg.chart circle[data-series="${id}"]`).evaluateAll((circles) =>
    circles.map((c) => [c.getAttribute('data-window'), c.getAttribute('data-value')]),
  );
}

test("the usage chart's numbers equal /v1/usage", async () => {
  const question = `metric=transfer&from=${from}&to=${to}&window=day&timezone=UTC`;
  await visit(`/console/usage?${question}&customer=acme&group_by=project`);
  await page.waitForSelector('svg.chart circle');
  const usage = await api('GET', `/v1/usage?metric=transfer&customer=acme&from=${fromTs}&to=${toTs}&window=day&timezone=UTC&group_by=project`);
  assert.equal(usage.status, 200);
  assert.equal(usage.body.windows.length, 3);
  const expectedTotals = usage.body.windows.map((w) => [w.from, w.total]);
  assert.deepEqual(await chartSeries('total'), expectedTotals);
  assert.deepEqual(expectedTotals.map(([, t]) => t), ['150', '25.5', '7'], 'the events sent add up as expected');
  // Every group's series, point for point.
  for (const w of usage.body.windows) {
    for (const g of w.groups) {
      const name = [
        ...(g.segment === 'other' ? ['other'] : Object.entries(g.segment).map(([k, v]) => `${k}=${v}`)),
        ...Object.entries(g.group_by).map(([k, v]) => `${k}=${v === null ? '(none)' : v}`),
      ].join(', ');
      const points = await chartSeries(`group:${name}`);
      assert.ok(points.some(([window, value]) => window === w.from && value === g.value), `${name} at ${w.from}`);
    }
  }
  // The table beside the chart holds the same totals.
  const tableTotals = await page.locator('#usage-table tbody tr').evaluateAll((rows) => rows.map((r) => r.children[1].textContent));
  assert.deepEqual(tableTotals, expectedTotals.map(([, t]) => t));
  const csvHref = await page.getByRole('link', { name: 'Download CSV' }).getAttribute('href');
  assert.match(csvHref, /^blob:/);
  await shot('07-usage-customer');

  await visit(`/console/usage?${question}&customer=top&top=2`);
  await page.waitForSelector('svg.chart circle');
  const everyone = await api('GET', `/v1/usage?metric=transfer&from=${fromTs}&to=${toTs}&window=day&timezone=UTC`);
  const byCustomer = Object.fromEntries(everyone.body.data.map((u) => [u.customer, u.windows.map((w) => [w.from, w.total])]));
  assert.deepEqual(await chartSeries('customer:globex'), byCustomer.globex);
  assert.deepEqual(await chartSeries('customer:acme'), byCustomer.acme);
  assert.equal(await page.locator('svg.chart g.series').count(), 2, 'the top 2 of 3 customers');
  await shot('08-usage-top-customers');

  await page.setViewportSize({ width: 390, height: 844 });
  await shot('09-usage-phone');
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("a filter edited in the form: the preview's numbers equal /v1/usage after saving", async () => {
  const before = await api('GET', `/v1/usage?metric=transfer&from=${fromTs}&to=${toTs}`);
  const current = Object.fromEntries(before.body.data.map((u) => [u.customer, u.windows[0].total]));
  await visit(`/console/metrics/transfer/edit?from=${from}&to=${to}`);
  await page.getByRole('button', { name: 'Add a filter' }).click();
  const filter = page.locator('fieldset.filter').last();
  await filter.getByLabel('Property', { exact: true }).fill('tier');
  await filter.getByLabel('Operator').selectOption('in');
  await filter.getByLabel('Values').fill('pro');
  // The preview follows the edit: wait until it shows the proposed filter.
  await page.waitForSelector('#preview-result ul.changes code:text("filters")');
  await page.waitForSelector('#preview-table');
  const rows = await page.locator('#preview-table tbody tr').evaluateAll((trs) =>
    trs.map((tr) => [...tr.children].map((c) => c.textContent)),
  );
  assert.equal(rows.length, 3);
  await shot('10-metric-edit-preview');
  // Sorted by the size of the change, largest first.
  const sizes = rows.map((r) => Math.abs(Number(r[3])));
  assert.deepEqual(sizes, [...sizes].sort((a, b) => b - a));
  for (const [customer, shownCurrent] of rows) assert.equal(shownCurrent, current[customer], `current of ${customer}`);

  await page.getByRole('button', { name: 'Save as a new revision' }).click();
  await page.waitForURL('**/console/metrics/transfer/revisions');
  const afterSave = await api('GET', `/v1/usage?metric=transfer&from=${fromTs}&to=${toTs}`);
  assert.equal(afterSave.body.data[0].metric.revision, 2);
  const saved = Object.fromEntries(afterSave.body.data.map((u) => [u.customer, u.windows[0].total]));
  for (const [customer, , proposed, difference] of rows) {
    assert.equal(proposed, saved[customer], `proposed usage of ${customer} is what /v1/usage answers after saving`);
    assert.equal(Number(difference), Number(saved[customer]) - Number(current[customer]));
  }
  assert.deepEqual(saved, { acme: '125.5', globex: '1000', initech: '5' });
});

test('the new revision is in the timeline, with what changed', async () => {
  await page.waitForSelector('#revisions li[data-revision="2"]');
  const latest = page.locator('#revisions li[data-revision="2"]');
  assert.match(await latest.textContent(), /Revision 2 \(current\)/);
  assert.match(await latest.locator('ul.changes').textContent(), /filters: no filters → tier in "pro"/);
  await page.getByRole('link', { name: 'Show the definition of revision 1' }).click();
  await page.waitForSelector('h2:text("Definition at revision 1")');
  assert.match(await page.locator('main').textContent(), /FiltersnoneSegmentation/);
  await shot('11-revisions');
});

test('a locked field is refused, naming the plan that locks it', async () => {
  const plan = await api('POST', '/v1/plans', {
    code: 'pro', name: 'Pro', interval: 'monthly', currency: 'EUR', amount: '10',
    charges: [{ metric: 'transfer', charge_model: 'standard', properties: { amount: '0.01' } }],
  });
  assert.equal(plan.status, 201, JSON.stringify(plan.body));
  const subscription = await api('POST', '/v1/subscriptions', { external_id: 'sub-acme', customer: 'acme', plan: 'pro', started_at: `${from}T00:00:00Z` });
  assert.equal(subscription.status, 201, JSON.stringify(subscription.body));

  await visit(`/console/metrics/transfer/edit?from=${from}&to=${to}`);
  const note = page.locator('[data-locked="aggregation.field"]');
  assert.match(await note.textContent(), /plan 'pro'/);
  await page.getByLabel('Field (property path)').fill('megabytes');
  await page.waitForSelector('#preview-result .notice.warning');
  assert.match(await page.locator('#preview-result .notice.warning').textContent(), /Saving would be refused: aggregation\.field is locked by plan 'pro'/);
  // The preview also prices the subscribed customer's charge under both definitions.
  await page.waitForSelector('#preview-amounts');
  await page.getByRole('button', { name: 'Save as a new revision' }).click();
  const alert = page.locator('form .error[role=alert]').last();
  await alert.waitFor();
  const text = await alert.textContent();
  assert.match(text, /metric_locked/);
  assert.match(text, /plan 'pro'/);
  assert.match(text, /aggregation\.field/);
  await shot('12-locked-field-refused');
  const unchanged = await api('GET', '/v1/metrics/transfer');
  assert.equal(unchanged.body.revision, 2);
  assert.equal(unchanged.body.aggregation.field, 'bytes');
});

test("explain an event that does not count, and read the reason", async () => {
  // Stored, and filtered out by the filter saved above.
  await visit('/console/explain?customer=acme&transaction_id=t-2');
  const card = page.locator('.metric-explanation[data-metric="transfer"]');
  await card.waitFor();
  assert.equal(await card.getAttribute('data-outcome'), 'filtered_out');
  const direct = await api('POST', '/v1/events/explain', { customer: 'acme', transaction_id: 't-2' });
  assert.equal(direct.status, 200);
  const reason = direct.body.metrics[0].reason;
  assert.equal(reason.code, 'filtered_out');
  assert.equal(await card.locator('.reason').textContent(), `Why: ${reason.message}`);
  assert.match(reason.message, /filter 1 fails: tier in \["pro"\], and the event has "free"/);
  await shot('13-explain-stored');

  // Pasted, without the value the metric sums: it would be accepted, and skipped.
  await visit('/console/explain');
  await page.getByLabel('Event (JSON, as POST /v1/events takes it)').fill(JSON.stringify({
    transaction_id: 'p-1', code: 'transfer', customer: 'acme', properties: { region: 'eu', tier: 'pro' },
  }));
  await page.getByRole('button', { name: 'Explain' }).click();
  await card.waitFor();
  assert.equal(await card.getAttribute('data-outcome'), 'skipped');
  assert.equal(await card.locator('.reason').getAttribute('data-reason'), 'missing_property');
  assert.match(await card.locator('.reason').textContent(), /the event has no property 'bytes': counted under events_skipped/);
  assert.match(await page.locator('#explain-result').textContent(), /Ingestion would accept it/);
  assert.equal((await api('GET', '/v1/events/p-1?customer=acme')).status, 404, 'explaining stores nothing');
  await shot('14-explain-pasted');
});

test('customers, plans and a subscription with its current usage and amounts', async () => {
  await visit('/console/customers');
  assert.deepEqual(await page.locator('#customers-table tbody th').allTextContents(), ['acme', 'globex', 'initech']);
  await shot('15-customers');
  await visit('/console/plans/pro');
  assert.match(await page.locator('#charges-table').textContent(), /transfer/);
  await shot('16-plan');
  await visit('/console/subscriptions/sub-acme');
  await page.waitForSelector('#current-usage-table');
  const usage = await api('GET', '/v1/subscriptions/sub-acme/usage');
  assert.equal(usage.status, 200, JSON.stringify(usage.body));
  const cells = await page.locator('#current-usage-table tbody tr').first().evaluate((tr) => [...tr.children].map((c) => c.textContent));
  assert.equal(cells[2], usage.body.charges[0].units);
  assert.equal(cells[4], `${usage.body.charges[0].amount} ${usage.body.currency}`);
  assert.match(await page.locator('.total').textContent(), new RegExp(`${usage.body.amount.replace('.', '\\.')} EUR`));
  await shot('17-subscription');
});

test('a key of another organization sees none of it', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL('**/console/sign-in');
  await page.getByLabel('API key').fill(server.other.key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/console/metrics');
  await page.waitForSelector('main h1:text("Metrics")');
  assert.match(await page.locator('#organization').textContent(), /Other org/);
  assert.match(await page.locator('main').textContent(), /No metric matches/);
  await visit('/console/metrics?archived=all');
  assert.match(await page.locator('main').textContent(), /No metric matches/);
  await visit('/console/metrics/transfer');
  assert.match(await page.locator('main [role=alert]').textContent(), /metric_not_found/);
  await visit('/console/events');
  assert.match(await page.locator('main').textContent(), /No events match/);
  await visit('/console/customers');
  assert.match(await page.locator('main').textContent(), /No customers/);
  await visit('/console/usage');
  assert.match(await page.locator('main').textContent(), /No metrics yet/);
  await visit('/console/explain?customer=acme&transaction_id=t-2');
  await page.waitForSelector('#explain-result [role=alert]');
  assert.match(await page.locator('#explain-result').textContent(), /event_not_found/);
  await visit('/console/subscriptions/sub-acme');
  assert.match(await page.locator('main [role=alert]').textContent(), /subscription_not_found/);
  await shot('18-other-organization');
  // And the API agrees: nothing of the first organization is visible to this key.
  assert.deepEqual((await otherApi('GET', '/v1/metrics?archived=all')).body.data, []);
});

test('sign out forgets the key', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL('**/console/sign-in');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('odometer.key')), null);
  await page.goto(server.baseUrl + '/console/metrics');
  await page.waitForURL('**/console/sign-in');
  assert.equal(await page.locator('#nav').isHidden(), true);
  await shot('19-signed-out');
  assert.deepEqual(pageErrors, [], 'no script errors in the pages');
});
