// Small DOM helpers shared by the pages: elements, labelled fields, tables, errors, status.

let nextId = 0;
export const uid = (prefix = 'f') => `${prefix}-${++nextId}`;

// h('a', {href, class, onclick, 'aria-label'}, child, [children], 'text')
export function h(tag, attributes = {}, ...children) {
  const svg = ['svg', 'g', 'line', 'polyline', 'circle', 'rect', 'text', 'title', 'path', 'desc'];
  const element = svg.includes(tag)
    ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'value' && 'value' in element) {
      element.value = value;
    } else if (name === 'checked' || name === 'selected' || name === 'disabled') {
      element[name] = Boolean(value);
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function clear(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

// A labelled control; `hint` is tied to the control with aria-describedby.
export function field(label, control, { hint, className } = {}) {
  const id = control.id || uid();
  control.id = id;
  const parts = [h('label', { for: id }, label), control];
  if (hint) {
    const hintId = id + '-hint';
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('p', { class: 'hint', id: hintId }, hint));
  }
  return h('div', { class: 'field' + (className ? ' ' + className : '') }, parts);
}

export function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map((option) => {
      const [v, text] = Array.isArray(option) ? option : [option, option];
      return h('option', { value: v, selected: v === value }, text);
    }),
  );
}

export const input = (name, value = '', extra = {}) =>
  h('input', { name, value, type: 'text', autocomplete: 'off', spellcheck: 'false', ...extra });

// A table with a caption, header cells with scope, in a scrollable, focusable region.
export function table(caption, columns, rows, { className, id } = {}) {
  const t = h(
    'table',
    { class: className, id },
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      rows.map((cells) =>
        h(
          'tr',
          {},
          cells.map((cell, i) =>
            i === 0 ? h('th', { scope: 'row' }, cell) : h('td', {}, cell),
          ),
        ),
      ),
    ),
  );
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': caption, tabindex: 0 }, t);
}

export function link(href, text, extra = {}) {
  return h('a', { href, ...extra }, text);
}

export function errorBox(error) {
  const details = (error.details || []).map((d) =>
    h('li', {}, d.path ? h('code', {}, d.path) : null, d.path ? ': ' : '', d.message),
  );
  return h(
    'div',
    { class: 'error', role: 'alert' },
    h('p', {}, h('strong', {}, error.code ? `${error.code}: ` : 'Error: '), error.message),
    details.length ? h('ul', {}, details) : null,
  );
}

export function announce(text) {
  const status = document.getElementById('status');
  status.textContent = '';
  // A new text node after a tick, so screen readers announce a repeated message too.
  setTimeout(() => (status.textContent = text), 30);
}

export function notice(text, kind = 'info') {
  return h('p', { class: `notice ${kind}`, role: kind === 'warning' ? 'alert' : null }, text);
}

// Decimal strings are shown as the API wrote them; null is an em dash.
export const shown = (value) => (value === null || value === undefined ? '—' : String(value));

export const json = (value) => JSON.stringify(value);

export function pre(value) {
  return h('pre', { class: 'json', tabindex: 0 }, JSON.stringify(value, null, 2));
}

export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// An instant as the API takes it: RFC 3339 stays, a bare date is UTC midnight.
export function instant(text) {
  const t = text.trim();
  return /^\d{4}-\d{2}-\d{2}$/.test(t) ? `${t}T00:00:00Z` : t;
}

export function monthStart(offset = 0) {
  const now = new Date();
  const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + offset, 1));
  return d.toISOString().slice(0, 10);
}

export function daysFromNow(days) {
  return new Date(Date.now() + days * 86400000).toISOString().slice(0, 10);
}
