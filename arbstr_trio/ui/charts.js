// Time-series charts as plain SVG: bars or lines over the buckets of /v1/stats.
//
// Deliberately small: one chart type with a y axis from zero, a few x labels, and a
// <title> on every point for its exact value (the browser shows it on hover). Colours
// come from CSS classes (series-0, series-1...), so the stylesheet owns the look.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 560;
const HEIGHT = 180;
const PAD = { top: 12, right: 12, bottom: 24, left: 48 };

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  if (text !== null) element.textContent = text;
  return element;
}

/** A y-axis maximum that is a round number at or above `value` (1, 2, 2.5, 5 × 10^n). */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

function tickLabel(value) {
  if (value === 0) return "0";
  if (Math.abs(value) >= 1000) return `${(value / 1000).toFixed(value % 1000 ? 1 : 0)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(value < 1 ? 3 : 1);
}

/**
 * @param {object} spec
 * @param {string} spec.title    what the chart shows (also its accessible name)
 * @param {Date[]} spec.times    one per bucket
 * @param {{name: string, values: (number|null)[], kind: "bar"|"line"}[]} spec.series
 * @param {string} spec.unit     appended to values in tooltips ("ms", "sats")
 * @param {(t: Date) => string} spec.timeLabel
 */
export function timeChart({ title, times, series, unit = "", timeLabel }) {
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": title,
  });
  root.append(svg("title", {}, title));
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const n = Math.max(times.length, 1);
  const slot = plotWidth / n;
  const bars = series.filter((s) => s.kind === "bar");
  const highest = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  const top = niceMax(highest);
  const y = (value) => PAD.top + plotHeight - (value / top) * plotHeight;
  const x = (index) => PAD.left + slot * index + slot / 2;

  // Grid lines and y labels at 0, 1/2 and the top.
  for (const fraction of [0, 0.5, 1]) {
    const value = top * fraction;
    root.append(
      svg("line", {
        x1: PAD.left,
        x2: WIDTH - PAD.right,
        y1: y(value),
        y2: y(value),
        class: "grid",
      }),
      svg(
        "text",
        { x: PAD.left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" },
        tickLabel(value),
      ),
    );
  }
  // About six x labels, whatever the bucket count.
  const every = Math.max(1, Math.ceil(times.length / 6));
  times.forEach((time, index) => {
    if (index % every === 0) {
      root.append(
        svg(
          "text",
          { x: x(index), y: HEIGHT - 6, class: "axis", "text-anchor": "middle" },
          timeLabel(time),
        ),
      );
    }
  });

  const barWidth = Math.max(1, (slot * 0.8) / Math.max(bars.length, 1));
  series.forEach((serie, seriesIndex) => {
    const cls = `series-${seriesIndex}`;
    if (serie.kind === "bar") {
      const offset = bars.indexOf(serie) * barWidth - (barWidth * bars.length) / 2;
      serie.values.forEach((value, index) => {
        if (!value) return;
        const rect = svg("rect", {
          x: x(index) + offset,
          y: y(value),
          width: barWidth,
          height: Math.max(0.5, PAD.top + plotHeight - y(value)),
          class: `bar ${cls}`,
        });
        rect.append(svg("title", {}, `${timeLabel(times[index])} ${serie.name}: ${value} ${unit}`));
        root.append(rect);
      });
      return;
    }
    // A line breaks where a bucket has no value (no requests, so no latency).
    let path = "";
    let pen = false;
    serie.values.forEach((value, index) => {
      if (value === null || value === undefined) {
        pen = false;
        return;
      }
      path += `${pen ? "L" : "M"}${x(index).toFixed(1)},${y(value).toFixed(1)}`;
      pen = true;
      const dot = svg("circle", { cx: x(index), cy: y(value), r: 2.5, class: `dot ${cls}` });
      dot.append(svg("title", {}, `${timeLabel(times[index])} ${serie.name}: ${value} ${unit}`));
      root.append(dot);
    });
    // Under the dots (after the <title>, which must stay the first child).
    if (path) root.insertBefore(svg("path", { d: path, class: `line ${cls}` }), root.children[1]);
  });
  return root;
}

/** The chart's legend, as HTML so it wraps: a swatch and a name per series. */
export function legend(series) {
  const list = document.createElement("ul");
  list.className = "legend";
  series.forEach((serie, index) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch series-${index}`;
    item.append(swatch, serie.name);
    list.append(item);
  });
  return list;
}
