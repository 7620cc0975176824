// Events per second per exchange, drawn as small SVG time-series charts by our own code (no
// charting library: the page must work offline and stay small).
//
// Each exchange keeps counts in fixed buckets over a sliding window; the chart plots the
// buckets from the exchange's first event (so a new exchange's line starts where its events
// began) up to the current bucket. The SVG element carries what a test can check:
// `data-points` (samples plotted), `data-sum` (events inside the window) and `data-peak`
// (highest rate shown, events per second).
(function () {
  'use strict';

  var BUCKET_MS = 5000;
  var BUCKETS = 60; // five minutes
  var RATE_WINDOW_MS = 10000;
  var WIDTH = 300;
  var HEIGHT = 56;
  var SVG_NS = 'http://www.w3.org/2000/svg';

  function svgEl(name, attrs) {
    var el = document.createElementNS(SVG_NS, name);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    return el;
  }

  // One exchange's counts; `now` is passed in so the series can be driven in tests.
  function Series() {
    this.first = null; // bucket number of the first event
    this.buckets = new Map(); // bucket number -> events
    this.recent = []; // arrival times within RATE_WINDOW_MS, for the current rate
  }

  Series.prototype.add = function (now) {
    var b = Math.floor(now / BUCKET_MS);
    if (this.first === null) { this.first = b; }
    this.buckets.set(b, (this.buckets.get(b) || 0) + 1);
    this.recent.push(now);
    this.prune(now);
  };

  Series.prototype.prune = function (now) {
    var oldest = Math.floor(now / BUCKET_MS) - BUCKETS + 1;
    var self = this;
    this.buckets.forEach(function (_, b) { if (b < oldest) { self.buckets.delete(b); } });
    while (this.recent.length > 0 && this.recent[0] <= now - RATE_WINDOW_MS) { this.recent.shift(); }
  };

  // Events per second over the last RATE_WINDOW_MS.
  Series.prototype.rate = function (now) {
    this.prune(now);
    return this.recent.length / (RATE_WINDOW_MS / 1000);
  };

  // [{bucket, perSecond}] from the first event (or the window's start) to now.
  Series.prototype.points = function (now) {
    this.prune(now);
    if (this.first === null) { return []; }
    var last = Math.floor(now / BUCKET_MS);
    var start = Math.max(this.first, last - BUCKETS + 1);
    var out = [];
    for (var b = start; b <= last; b += 1) {
      // The current bucket is still filling: divide by the time it has run (at least half a
      // bucket, so its first event is not a spike) rather than let the line dip at "now".
      var span = b === last ? Math.max(now - b * BUCKET_MS, BUCKET_MS / 2) : BUCKET_MS;
      out.push({ bucket: b, perSecond: (this.buckets.get(b) || 0) / (span / 1000) });
    }
    return out;
  };

  Series.prototype.sum = function () {
    var total = 0;
    this.buckets.forEach(function (n) { total += n; });
    return total;
  };

  // A chart bound to one <svg>; redraw() replaces its contents.
  function Chart(label) {
    this.svg = svgEl('svg', {
      viewBox: '0 0 ' + WIDTH + ' ' + HEIGHT,
      preserveAspectRatio: 'none',
      role: 'img',
      class: 'chart'
    });
    this.label = label;
    this.svg.dataset.points = '0';
    this.svg.dataset.sum = '0';
    this.svg.dataset.peak = '0';
  }

  // A round ceiling for the y axis, so charts of similar traffic share a scale.
  function niceCeiling(v) {
    var steps = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];
    for (var i = 0; i < steps.length; i += 1) { if (v <= steps[i]) { return steps[i]; } }
    return Math.pow(10, Math.ceil(Math.log10(v)));
  }

  Chart.prototype.redraw = function (series, now) {
    var pts = series.points(now);
    var peak = 0;
    pts.forEach(function (p) { if (p.perSecond > peak) { peak = p.perSecond; } });
    var top = niceCeiling(Math.max(peak, 0.2));
    var last = Math.floor(now / BUCKET_MS);
    // x: the whole window is always the full width, so charts line up in time.
    var x = function (b) { return WIDTH - (last - b) * (WIDTH / (BUCKETS - 1)); };
    var y = function (v) { return HEIGHT - 2 - (v / top) * (HEIGHT - 6); };
    while (this.svg.firstChild) { this.svg.firstChild.remove(); }
    this.svg.appendChild(svgEl('line', { x1: 0, x2: WIDTH, y1: y(top / 2), y2: y(top / 2), class: 'grid' }));
    this.svg.appendChild(svgEl('line', { x1: 0, x2: WIDTH, y1: HEIGHT - 2, y2: HEIGHT - 2, class: 'axis' }));
    if (pts.length > 0) {
      var line = pts.map(function (p, i) {
        return (i === 0 ? 'M' : 'L') + x(p.bucket).toFixed(1) + ' ' + y(p.perSecond).toFixed(1);
      }).join(' ');
      var x0 = x(pts[0].bucket).toFixed(1);
      var area = line + ' L' + WIDTH + ' ' + (HEIGHT - 2) + ' L' + x0 + ' ' + (HEIGHT - 2) + ' Z';
      this.svg.appendChild(svgEl('path', { d: area, class: 'area' }));
      this.svg.appendChild(svgEl('path', { d: line, class: 'line' }));
    }
    var title = svgEl('title');
    title.textContent = this.label + ': events per second, last ' + (BUCKETS * BUCKET_MS / 60000) +
      ' minutes (' + (BUCKET_MS / 1000) + ' s steps); scale 0–' + top + '/s';
    this.svg.appendChild(title);
    this.svg.dataset.points = String(pts.length);
    this.svg.dataset.sum = String(series.sum());
    this.svg.dataset.peak = String(peak);
    this.svg.dataset.scale = String(top);
  };

  window.RelayCharts = {
    Series: Series,
    Chart: Chart,
    WINDOW_MINUTES: BUCKETS * BUCKET_MS / 60000
  };
}());
