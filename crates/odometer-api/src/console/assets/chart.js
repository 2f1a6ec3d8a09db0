// Line charts drawn as SVG. Positions use Number(); every label, tooltip and data-value
// attribute keeps the API's exact decimal string.

import { h } from './ui.js';

const WIDTH = 720;
const HEIGHT = 320;
const MARGIN = { top: 16, right: 44, bottom: 48, left: 72 };
export const COLORS = ['#1f6feb', '#d9480f', '#2b8a3e', '#862e9c', '#c2255c', '#0b7285', '#5c940d', '#495057'];

// A readable, round step for about `count` ticks over [0, max].
function ticks(min, max, count = 5) {
  if (min === max) {
    max = min + 1;
  }
  const raw = (max - min) / count;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const first = Math.floor(min / step) * step;
  const values = [];
  for (let v = first; v <= max + step * 0.5; v += step) values.push(Number(v.toPrecision(12)));
  return values;
}

// series: [{id, name, values: [string|null per window]}]; windows: [{from, to, label}]
export function lineChart({ title, windows, series }) {
  const numbers = series.flatMap((s) => s.values.filter((v) => v !== null).map(Number));
  const low = Math.min(0, ...numbers);
  const high = Math.max(0, ...numbers);
  const yTicks = ticks(low, high);
  const yMin = yTicks[0];
  const yMax = yTicks[yTicks.length - 1];
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const x = (i) => MARGIN.left + (windows.length === 1 ? plotW / 2 : (i * plotW) / (windows.length - 1));
  const y = (v) => MARGIN.top + plotH - ((v - yMin) / (yMax - yMin || 1)) * plotH;
  const labelEvery = Math.max(1, Math.ceil(windows.length / 8));

  const svg = h(
    'svg',
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: 'img',
      'aria-label': `${title}: ${series.length} series over ${windows.length} windows; the table beside it has the numbers`,
      class: 'chart',
    },
    h('title', {}, title),
    // grid and y axis
    yTicks.map((t) =>
      h(
        'g',
        { class: 'tick' },
        h('line', { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(t), y2: y(t) }),
        h('text', { x: MARGIN.left - 8, y: y(t) + 4, 'text-anchor': 'end' }, String(t)),
      ),
    ),
    // x labels
    windows.map((w, i) =>
      i % labelEvery === 0
        ? h('text', { class: 'x-label', x: x(i), y: HEIGHT - MARGIN.bottom + 18, 'text-anchor': 'middle' }, w.label)
        : null,
    ),
    series.map((s, n) => {
      const color = COLORS[n % COLORS.length];
      const points = s.values
        .map((v, i) => (v === null ? null : `${x(i)},${y(Number(v))}`))
        .filter(Boolean)
        .join(' ');
      return h(
        'g',
        { class: 'series', 'data-series': s.id },
        h('polyline', { points, fill: 'none', stroke: color, 'stroke-width': 2 }),
        s.values.map((v, i) =>
          v === null
            ? null
            : h(
                'circle',
                {
                  cx: x(i),
                  cy: y(Number(v)),
                  r: 3.5,
                  fill: color,
                  'data-series': s.id,
                  'data-window': windows[i].from,
                  'data-value': v,
                },
                h('title', {}, `${s.name}, ${windows[i].label}: ${v}`),
              ),
        ),
      );
    }),
  );
  const legend = h(
    'ul',
    { class: 'legend', 'aria-label': 'Legend' },
    series.map((s, n) =>
      h(
        'li',
        {},
        h('span', { class: 'swatch', 'data-color': n % COLORS.length, 'aria-hidden': 'true' }),
        s.name,
      ),
    ),
  );
  return h('figure', { class: 'chart-figure' }, svg, legend);
}
