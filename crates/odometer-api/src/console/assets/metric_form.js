// The metric form: every member of a definition (semantics 3), read into the JSON the native
// API takes; the API's validation problems shown at their fields (a SQL problem at its line
// and column); locked fields marked with the plans that lock them.

import { h, clear, field, select, input, uid } from './ui.js';

const AGGREGATIONS = ['count', 'sum', 'min', 'max', 'mean', 'latest', 'unique_count', 'weighted_sum', 'custom_sql'];
const RECURRING = ['sum', 'unique_count', 'weighted_sum'];
const FILTER_OPS = ['eq', 'ne', 'in', 'not_in', 'exists', 'not_exists'];
const CONVERSION_ROUNDING = ['none', 'up', 'down', 'nearest', 'nearest_half', 'nearest_decile'];
export const LOCKED_FIELDS = ['event_code', 'aggregation.type', 'aggregation.field', 'aggregation.expression', 'aggregation.recurring'];

const list = (text) =>
  text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
const text = (values) => (values || []).map(String).join(', ');

// `definition`: a metric as the API writes it (or null for a new one); `locks`: the plan
// codes that lock the metric's fields (empty when it is not attached).
export function metricForm(definition, { locks = [], editing = false } = {}) {
  const d = definition || {};
  const agg = d.aggregation || { type: 'sum' };
  const controls = {}; // path -> element problems are shown at
  const listeners = [];
  const changed = () => listeners.forEach((f) => f());

  const lockNote = (path) =>
    locks.length
      ? h(
          'p',
          { class: 'lock', 'data-locked': path },
          h('span', { 'aria-hidden': 'true' }, '🔒 '),
          `Locked while plan ${locks.map((p) => `'${p}'`).join(', ')} charges this metric: a change is refused.`,
        )
      : null;
  const locked = (path, element) => {
    controls[path] = element;
    if (locks.length) element.classList.add('locked');
    return element;
  };

  // --- identity
  const code = input('code', d.code, { required: true });
  const name = input('name', d.name, { required: true });
  const eventCode = input('event_code', d.event_code && d.event_code !== d.code ? d.event_code : (editing ? d.event_code : ''));
  const description = h('textarea', { name: 'description', rows: 2 }, d.description || '');
  Object.assign(controls, { code, name, event_code: eventCode, description });
  locked('event_code', eventCode);

  // --- aggregation
  const type = select('aggregation.type', AGGREGATIONS, agg.type);
  const fieldInput = input('aggregation.field', agg.field || '');
  const expression = input('aggregation.expression', agg.expression || '');
  const recurring = h('input', { type: 'checkbox', name: 'aggregation.recurring', checked: agg.recurring === true });
  const query = h('textarea', { name: 'aggregation.query', rows: 6, class: 'code', spellcheck: 'false' }, agg.query || '');
  const customerQuery = h('textarea', { name: 'aggregation.customer_query', rows: 3, class: 'code', spellcheck: 'false' }, agg.customer_query || '');
  const sqlProblem = h('div', { class: 'sql-problem', id: uid('sql'), 'aria-live': 'polite' });
  query.setAttribute('aria-describedby', sqlProblem.id);
  locked('aggregation.type', type);
  locked('aggregation.field', fieldInput);
  locked('aggregation.expression', expression);
  locked('aggregation.recurring', recurring);
  controls['aggregation.query'] = query;
  controls['aggregation.customer_query'] = customerQuery;
  controls.aggregation = type;

  const valueFields = h(
    'div',
    { class: 'row' },
    h('div', {}, field('Field (property path)', fieldInput, { hint: 'A top-level key or a dotted path, like usage.bytes.' }), lockNote('aggregation.field')),
    h('div', {}, field('Expression (instead of a field)', expression, { hint: "e.g. event.properties.bytes / 1024" }), lockNote('aggregation.expression')),
  );
  const recurringField = h('div', { class: 'check' }, h('label', {}, recurring, ' Recurring (carries state across periods)'), lockNote('aggregation.recurring'));
  const sqlFields = h(
    'div',
    {},
    field('SQL query', query, { hint: 'One read-only SELECT over events; {{start_date}}, {{end_date}} and {{customer.external_id}} are bound as parameters.' }),
    sqlProblem,
    field('Customer query (optional)', customerQuery),
  );
  const showAggregation = () => {
    const t = type.value;
    valueFields.hidden = t === 'count' || t === 'custom_sql';
    recurringField.hidden = !RECURRING.includes(t);
    sqlFields.hidden = t !== 'custom_sql';
  };
  type.addEventListener('change', showAggregation);
  showAggregation();

  // --- filters
  const filterRows = h('div', { class: 'rows' });
  const addFilter = (f = { property: '', op: 'eq', values: [] }) => {
    const property = input('property', f.property);
    const op = select('op', FILTER_OPS, f.op);
    const values = input('values', text(f.values));
    const valuesField = field('Values', values, { hint: 'Comma-separated' });
    const showValues = () => (valuesField.hidden = op.value === 'exists' || op.value === 'not_exists');
    op.addEventListener('change', showValues);
    showValues();
    const row = h(
      'fieldset',
      { class: 'filter row' },
      h('legend', {}, 'Filter'),
      field('Property', property),
      field('Operator', op),
      valuesField,
      h('button', { type: 'button', class: 'secondary', onclick: () => { row.remove(); renumber(); changed(); } }, 'Remove filter'),
    );
    row.read = () => ({
      property: property.value.trim(),
      op: op.value,
      values: op.value === 'exists' || op.value === 'not_exists' ? [] : list(values.value),
    });
    row.controls = { property, op, values };
    filterRows.append(row);
    renumber();
  };
  const renumber = () => {
    [...filterRows.children].forEach((row, i) => {
      row.querySelector('legend').textContent = `Filter ${i + 1}`;
      controls[`filters[${i}]`] = row.controls.property;
      controls[`filters[${i}].property`] = row.controls.property;
      controls[`filters[${i}].op`] = row.controls.op;
      controls[`filters[${i}].values`] = row.controls.values;
    });
  };
  (d.filters || []).forEach(addFilter);

  // --- segmentation
  const seg = d.segmentation || null;
  const segType = select('segmentation.type', [['none', 'none'], 'single', 'double', 'linked'], seg ? seg.type : 'none');
  const unmatched = select('segmentation.unmatched', [['other', 'other: one "other" group'], ['drop', 'drop: exclude']], seg ? seg.unmatched : 'other');
  const singleKey = input('segmentation.key', seg && seg.type === 'single' ? seg.key : '');
  const singleValues = input('segmentation.values', seg && seg.type === 'single' ? text(seg.values) : '');
  const d1Key = input('segmentation.dimension1.key', seg && seg.type === 'double' ? seg.dimension1.key : seg && seg.type === 'linked' ? seg.dimension1_key : '');
  const d1Values = input('segmentation.dimension1.values', seg && seg.type === 'double' ? text(seg.dimension1.values) : '');
  const d2Key = input('segmentation.dimension2.key', seg && seg.type === 'double' ? seg.dimension2.key : seg && seg.type === 'linked' ? seg.dimension2_key : '');
  const d2Values = input('segmentation.dimension2.values', seg && seg.type === 'double' ? text(seg.dimension2.values) : '');
  const linkedValues = h(
    'textarea',
    { name: 'segmentation.values', rows: 3, class: 'code' },
    seg && seg.type === 'linked' ? Object.entries(seg.values).map(([k, v]) => `${k}: ${v.join(', ')}`).join('\n') : '',
  );
  Object.assign(controls, {
    segmentation: segType,
    'segmentation.unmatched': unmatched,
    'segmentation.key': singleKey,
    'segmentation.values': segType.value === 'linked' ? linkedValues : singleValues,
    'segmentation.dimension1': d1Key,
    'segmentation.dimension1.key': d1Key,
    'segmentation.dimension1.values': d1Values,
    'segmentation.dimension2': d2Key,
    'segmentation.dimension2.key': d2Key,
    'segmentation.dimension2.values': d2Values,
    'segmentation.dimension1_key': d1Key,
    'segmentation.dimension2_key': d2Key,
  });
  const single = h('div', { class: 'row' }, field('Key', singleKey), field('Values', singleValues, { hint: 'Comma-separated' }));
  const dims = h(
    'div',
    { class: 'row' },
    field('Dimension 1 key', d1Key),
    field('Dimension 1 values', d1Values, { hint: 'Comma-separated' }),
    field('Dimension 2 key', d2Key),
    field('Dimension 2 values', d2Values, { hint: 'Comma-separated' }),
  );
  const linked = field('Pairs', linkedValues, { hint: 'One line per dimension 1 value: "aws: us-east-1, eu-west-1"' });
  const unmatchedField = field('Events outside the matrix', unmatched);
  const showSegmentation = () => {
    const t = segType.value;
    single.hidden = t !== 'single';
    dims.hidden = t !== 'double' && t !== 'linked';
    for (const el of [d1Values, d2Values]) el.closest('.field').hidden = t !== 'double';
    linked.hidden = t !== 'linked';
    unmatchedField.hidden = t === 'none';
    controls['segmentation.values'] = t === 'linked' ? linkedValues : singleValues;
  };
  segType.addEventListener('change', showSegmentation);
  showSegmentation();

  // --- group_by, unit conversion, rounding
  const groupBy = input('group_by', text(d.group_by));
  const uc = d.unit_conversion;
  const factor = input('unit_conversion.factor', uc ? uc.factor : '', { inputmode: 'decimal' });
  const ucRounding = select('unit_conversion.rounding', CONVERSION_ROUNDING, uc ? uc.rounding : 'none');
  const r = d.rounding;
  const roundFunction = select('rounding.function', [['', 'no rounding'], 'round', 'ceil', 'floor'], r ? r.function : '');
  const precision = input('rounding.precision', r ? String(r.precision) : '0', { inputmode: 'numeric' });
  Object.assign(controls, {
    group_by: groupBy,
    unit_conversion: factor,
    'unit_conversion.factor': factor,
    'unit_conversion.rounding': ucRounding,
    rounding: roundFunction,
    'rounding.function': roundFunction,
    'rounding.precision': precision,
  });

  const problems = h('div', { class: 'problems' });
  const element = h(
    'div',
    { class: 'metric-form' },
    problems,
    h(
      'fieldset',
      {},
      h('legend', {}, 'Metric'),
      h('div', { class: 'row' }, field('Code', code, { hint: 'Unique; clients use it in URLs.' }), field('Name', name)),
      h('div', {}, field('Event code', eventCode, { hint: 'The event code it reads; the code when empty.' }), lockNote('event_code')),
      field('Description', description),
    ),
    h(
      'fieldset',
      {},
      h('legend', {}, 'Aggregation'),
      h('div', {}, field('Type', type), lockNote('aggregation.type')),
      valueFields,
      recurringField,
      sqlFields,
    ),
    h(
      'fieldset',
      {},
      h('legend', {}, 'Filters (all must hold)'),
      filterRows,
      h('button', { type: 'button', class: 'secondary', onclick: () => { addFilter(); changed(); filterRows.lastChild.querySelector('input').focus(); } }, 'Add a filter'),
    ),
    h(
      'fieldset',
      {},
      h('legend', {}, 'Segmentation and grouping'),
      field('Segmentation', segType),
      single,
      dims,
      linked,
      unmatchedField,
      field('Group by', groupBy, { hint: 'Comma-separated property keys' }),
    ),
    h(
      'fieldset',
      {},
      h('legend', {}, 'Unit conversion and rounding'),
      h('div', { class: 'row' }, field('Divide by', factor, { hint: 'Empty for no conversion' }), field('Then round', ucRounding)),
      h('div', { class: 'row' }, field('Rounding function', roundFunction), field('Precision (decimal places)', precision)),
    ),
  );
  element.addEventListener('input', changed);
  element.addEventListener('change', changed);

  function read() {
    const out = { code: code.value.trim(), name: name.value.trim() };
    if (eventCode.value.trim()) out.event_code = eventCode.value.trim();
    out.description = description.value.trim() || null;
    const t = type.value;
    const aggregation = { type: t };
    if (t === 'custom_sql') {
      aggregation.query = query.value;
      if (customerQuery.value.trim()) aggregation.customer_query = customerQuery.value;
    } else if (t !== 'count') {
      if (fieldInput.value.trim()) aggregation.field = fieldInput.value.trim();
      if (expression.value.trim()) aggregation.expression = expression.value.trim();
    }
    if (RECURRING.includes(t) && recurring.checked) aggregation.recurring = true;
    out.aggregation = aggregation;
    out.filters = [...filterRows.children].map((row) => row.read());
    const st = segType.value;
    const um = unmatched.value;
    if (st === 'single') out.segmentation = { type: 'single', key: singleKey.value.trim(), values: list(singleValues.value), unmatched: um };
    else if (st === 'double')
      out.segmentation = {
        type: 'double',
        dimension1: { key: d1Key.value.trim(), values: list(d1Values.value) },
        dimension2: { key: d2Key.value.trim(), values: list(d2Values.value) },
        unmatched: um,
      };
    else if (st === 'linked') {
      const values = {};
      for (const line of linkedValues.value.split('\n')) {
        const at = line.indexOf(':');
        if (at < 0) continue;
        values[line.slice(0, at).trim()] = list(line.slice(at + 1));
      }
      out.segmentation = { type: 'linked', dimension1_key: d1Key.value.trim(), dimension2_key: d2Key.value.trim(), values, unmatched: um };
    } else out.segmentation = null;
    out.group_by = list(groupBy.value);
    out.unit_conversion = factor.value.trim() ? { factor: factor.value.trim(), rounding: ucRounding.value } : null;
    out.rounding = roundFunction.value
      ? { function: roundFunction.value, precision: Number.parseInt(precision.value, 10) }
      : null;
    return out;
  }

  // The control a problem's path belongs to: the longest registered prefix.
  function controlFor(path) {
    let p = path;
    while (p) {
      if (controls[p]) return controls[p];
      const cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
      p = cut > 0 ? p.slice(0, cut) : '';
    }
    return null;
  }

  function showProblems(error) {
    for (const el of element.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    for (const el of element.querySelectorAll('.field-problem')) el.remove();
    clear(sqlProblem);
    clear(problems);
    if (!error) return;
    const details = error.details && error.details.length ? error.details : [{ path: '', code: error.code, message: error.message }];
    const items = [];
    for (const detail of details) {
      const control = controlFor(detail.path);
      const text = detail.path ? `${detail.path}: ${detail.message}` : detail.message;
      if (control) {
        control.setAttribute('aria-invalid', 'true');
        const note = h('p', { class: 'field-problem', id: uid('problem') }, text);
        control.closest('.field, .check, fieldset').append(note);
        const described = (control.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
        control.setAttribute('aria-describedby', [...described.filter((id) => !id.startsWith('problem-')), note.id].join(' '));
      }
      if (detail.code === 'invalid_sql') showSqlProblem(detail);
      items.push(h('li', {}, control ? h('a', { href: '#' + control.id, onclick: (e) => { e.preventDefault(); control.focus(); } }, text) : text));
    }
    clear(problems, h('div', { class: 'error', role: 'alert' }, h('p', {}, h('strong', {}, `${error.code}: `), error.message), h('ul', {}, items)));
  }

  // The validator's "(line L, column C)": the line quoted with a caret under the column, and
  // the text cursor put there.
  function showSqlProblem(detail) {
    const found = /\(line (\d+), column (\d+)\)\s*$/.exec(detail.message);
    if (!found) return;
    const [line, column] = [Number(found[1]), Number(found[2])];
    const lines = query.value.split('\n');
    const quoted = lines[line - 1] ?? '';
    clear(
      sqlProblem,
      h('p', {}, `Line ${line}, column ${column}: `, detail.message.replace(found[0], '')),
      h('pre', { class: 'sql-caret', 'data-line': line, 'data-column': column }, `${quoted}\n${' '.repeat(Math.max(0, column - 1))}^`),
    );
    const offset = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0) + column - 1;
    query.setSelectionRange(offset, offset + 1);
  }

  return {
    element,
    read,
    showProblems,
    onChange: (f) => listeners.push(f),
    focus: () => (editing ? name : code).focus(),
  };
}

// An RFC 7386 merge patch turning `before` into `after`: changed members, nulls for removed.
export function mergePatch(before, after) {
  const patch = {};
  for (const key of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const a = before[key];
    const b = after[key];
    if (!(key in after) || b === null) {
      if (key in before && a !== null) patch[key] = null;
    } else if (isObject(a) && isObject(b)) {
      const inner = mergePatch(a, b);
      if (Object.keys(inner).length) patch[key] = inner;
    } else if (JSON.stringify(a) !== JSON.stringify(b)) {
      patch[key] = b;
    }
  }
  return patch;
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
