// Rendering for app.js: the events table (payloads as key/value chips), per-exchange totals
// with rate charts, the connection panel (relay identity, last resume, latest delay) and the
// empty state. Nothing here talks to the relay.
(function () {
  'use strict';

  var CHIPS_MAX = 10;
  var CHIP_VALUE_SHOWN = 80;
  var TITLE_SHOWN = 4000;

  var $ = function (id) { return document.getElementById(id); };

  function pad(n, width) { var s = String(n); while (s.length < width) { s = '0' + s; } return s; }

  function clockTime(d, withMs) {
    var t = pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' + pad(d.getSeconds(), 2);
    return withMs ? t + '.' + pad(d.getMilliseconds(), 3) : t;
  }

  // A delay in words sized to its magnitude: 35 ms, 1.2 s, 3 min.
  function duration(ms) {
    var sign = ms < 0 ? '−' : '';
    var a = Math.abs(ms);
    if (a < 1000) { return sign + Math.round(a) + ' ms'; }
    if (a < 60000) { return sign + (a / 1000).toFixed(1) + ' s'; }
    if (a < 3600000) { return sign + Math.round(a / 60000) + ' min'; }
    return sign + (a / 3600000).toFixed(1) + ' h';
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) { e.className = className; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function cell(tr, text, className) {
    var td = el('td', className, text);
    tr.appendChild(td);
    return td;
  }

  function chipValue(v) {
    var text;
    if (typeof v === 'string') { text = v; } else if (v === null || typeof v !== 'object') {
      text = String(v);
    } else { text = JSON.stringify(v); }
    return text.length > CHIP_VALUE_SHOWN ? text.slice(0, CHIP_VALUE_SHOWN) + '…' : text;
  }

  function chips(td, payload) {
    var names = payload && typeof payload === 'object' && !Array.isArray(payload) ? Object.keys(payload) : [];
    if (names.length === 0) {
      td.appendChild(el('span', 'muted', '—'));
      return;
    }
    names.slice(0, CHIPS_MAX).forEach(function (k) {
      var chip = el('span', 'chip');
      chip.dataset.field = k;
      chip.appendChild(el('span', 'ck', k));
      chip.appendChild(el('span', 'cv', chipValue(payload[k])));
      td.appendChild(chip);
    });
    if (names.length > CHIPS_MAX) {
      td.appendChild(el('span', 'chip more', '+' + (names.length - CHIPS_MAX) + ' more'));
    }
  }

  // The publish time of an event, ms since the epoch, if the relay stamped one.
  function publishedAt(msg) {
    var ts = msg.mq && typeof msg.mq.ts === 'number' ? msg.mq.ts : msg.ts;
    return typeof ts === 'number' && isFinite(ts) && ts > 0 ? ts : null;
  }

  function View(rowCap) {
    this.rowCap = rowCap;
    this.events = document.querySelector('#events tbody');
    this.counters = document.querySelector('#counters tbody');
    this.exchanges = new Map(); // exchange -> {count, countCell, rateCell, series, chart}
    this.rows = 0;
  }

  // Adds a row at the top; returns the event's delay in ms, or null without a publish time.
  View.prototype.addRow = function (msg, now) {
    var shown = new Date(now);
    var ts = publishedAt(msg);
    var delay = ts === null ? null : now - ts;
    var tr = el('tr');
    tr.dataset.seq = String(msg.mq.seq);
    tr.dataset.exchange = msg.mq.e;
    tr.dataset.key = msg.mq.rk;
    tr.dataset.event = msg.event;
    var payload = msg.payload === undefined ? {} : msg.payload;
    var text = JSON.stringify(payload);
    tr.dataset.payload = text;
    var time = el('time', null, clockTime(shown, true));
    time.dateTime = shown.toISOString();
    var tdTime = cell(tr, '', 'time');
    tdTime.appendChild(time);
    if (delay !== null) {
      tr.dataset.delayMs = String(Math.round(delay));
      tdTime.appendChild(el('span', 'lag', '+' + duration(delay)));
    }
    cell(tr, msg.mq.e, 'exchange');
    cell(tr, msg.mq.rk, 'key');
    cell(tr, String(msg.mq.seq), 'num');
    cell(tr, msg.event, 'event');
    var td = cell(tr, '', 'payload');
    chips(td, payload);
    td.title = text.length > TITLE_SHOWN ? text.slice(0, TITLE_SHOWN) + '…' : text;
    this.events.insertBefore(tr, this.events.firstChild);
    while (this.events.rows.length > this.rowCap) { this.events.deleteRow(-1); }
    this.rows = this.events.rows.length;
    return delay;
  };

  // Counts one event for its exchange (a row and a chart appear with the first).
  View.prototype.bump = function (exchange, now) {
    var x = this.exchanges.get(exchange);
    if (!x) {
      var tr = el('tr');
      tr.dataset.exchange = exchange;
      var th = el('th', null, exchange);
      th.scope = 'row';
      tr.appendChild(th);
      x = {
        count: 0,
        countCell: cell(tr, '0', 'num total'),
        rateCell: cell(tr, '0', 'num rate'),
        series: new window.RelayCharts.Series(),
        chart: new window.RelayCharts.Chart(exchange)
      };
      var chartCell = cell(tr, '', 'chart-cell');
      x.scale = el('span', 'chart-scale');
      chartCell.appendChild(x.scale);
      chartCell.appendChild(x.chart.svg);
      var axis = el('div', 'chart-axis');
      axis.appendChild(el('span', null, window.RelayCharts.WINDOW_MINUTES + ' min ago'));
      axis.appendChild(el('span', null, 'now'));
      chartCell.appendChild(axis);
      this.exchanges.set(exchange, x);
      // Alphabetical, so rows do not jump around as exchanges appear.
      var before = null;
      Array.prototype.forEach.call(this.counters.rows, function (row) {
        if (before === null && row.dataset.exchange > exchange) { before = row; }
      });
      this.counters.insertBefore(tr, before);
      $('counters-empty').hidden = true;
    }
    x.count += 1;
    x.countCell.textContent = x.count.toLocaleString('en');
    x.countCell.dataset.count = String(x.count);
    x.series.add(now);
  };

  // Redraws every chart and rate (once a second, and soon after events).
  View.prototype.tick = function (now) {
    this.exchanges.forEach(function (x) {
      var rate = x.series.rate(now);
      x.rateCell.textContent = rate.toFixed(1) + '/s';
      x.rateCell.dataset.rate = String(rate);
      x.chart.redraw(x.series, now);
      x.scale.textContent = x.chart.svg.dataset.scale + '/s';
    });
  };

  View.prototype.showIdentity = function (w) {
    var relay = $('relay');
    relay.textContent = w.relay || location.host;
    relay.dataset.relay = w.relay || '';
    relay.title = w.relay ? 'relay ' + w.relay + ' at ' + location.host : 'the relay at ' + location.host;
    var member = $('member');
    member.textContent = w.member || '';
    member.dataset.member = w.member || '';
    $('member-wrap').hidden = !w.member;
    $('relay-detail').textContent = (w.relay ? w.relay + ' at ' : '') + location.host + (window.RelayRoute || '/events') +
      (w.member ? ' · member ' + w.member : '');
    var run = $('run');
    // Runs are long ids; the start tells two runs apart, the title holds the rest.
    run.textContent = w.run ? (w.run.length > 14 ? w.run.slice(0, 13) + '…' : w.run) : '—';
    run.title = w.run || '';
    run.dataset.run = w.run || '';
    $('session').textContent = w.id || '—';
  };

  // r: {result: 'pending'|'recovered'|'gap'|'restarted', keys, replayed, from, at}
  View.prototype.showResume = function (r) {
    var dd = $('resume');
    dd.dataset.result = r.result;
    dd.dataset.keys = String(r.keys);
    dd.dataset.replayed = String(r.replayed);
    dd.dataset.from = r.from || '';
    var what = {
      pending: 'resuming ' + r.keys + ' key' + (r.keys === 1 ? '' : 's') + '…',
      recovered: 'recovered',
      gap: 'not recovered: events were missed',
      restarted: 'relay restarted',
      nothing: 'nothing to resume'
    }[r.result] || r.result;
    dd.replaceChildren(el('span', 'resume-badge', what));
    if (r.result !== 'pending') {
      dd.appendChild(document.createTextNode(' '));
      dd.appendChild(el('span', 'resume-detail', 'replayed ' + r.replayed + ' event' + (r.replayed === 1 ? '' : 's') +
        ' on ' + r.keys + ' key' + (r.keys === 1 ? '' : 's') + ' from ' + (r.from || 'the relay\'s history') +
        ', ' + clockTime(new Date(r.at), false)));
    }
  };

  View.prototype.showDelay = function (delay) {
    var dd = $('delay');
    dd.dataset.delayMs = delay === null ? '' : String(Math.round(delay));
    dd.textContent = delay === null ? '—' : duration(delay);
    dd.title = delay === null ? 'the relay does not stamp a publish time on events (mq.ts)'
      : 'publish time to shown, for the latest event';
  };

  // s: {state, subs: [{exchange, pattern}], source: 'url'|'public'|'form'|null}
  View.prototype.showEmpty = function (s) {
    var box = $('empty');
    var title = box.querySelector('.empty-title');
    var body = box.querySelector('.empty-body');
    var reason = this.rows > 0 ? 'none' : !s.welcomed ? 'connecting' : s.subs.length === 0 ? 'no-subscriptions' : 'waiting';
    box.dataset.reason = reason;
    box.hidden = reason === 'none';
    if (reason === 'connecting') {
      title.textContent = 'Connecting to the relay…';
      body.textContent = 'This page talks to ' + location.host + (window.RelayRoute || '/events') + ' over a WebSocket.';
    } else if (reason === 'no-subscriptions') {
      title.textContent = 'Nothing to show yet: this relay names no public exchanges.';
      var example = el('a', null, '?sub=calls/queue.*&sub=agents/*');
      example.href = location.pathname + '?sub=calls/queue.*&sub=agents/*';
      example.className = 'mono';
      body.replaceChildren(
        document.createTextNode('Subscribe with the form (for example exchange '),
        el('code', null, 'calls'), document.createTextNode(', routing key '), el('code', null, 'queue.*'),
        document.createTextNode('), or open this page as '),
        example, document.createTextNode('.'));
    } else if (reason === 'waiting') {
      title.textContent = 'Subscribed to ' + s.subs.map(function (x) { return x.exchange + ' / ' + x.pattern; }).join(', ') +
        '; waiting for the first event…';
      body.replaceChildren(document.createTextNode('Events appear here as they are published. '),
        el('code', null, 'scripts/demo'), document.createTextNode(' runs a simulated call centre that publishes some.'));
    }
  };

  View.prototype.notice = function (text) {
    var li = el('li', null, clockTime(new Date(), false) + ' ' + text);
    var list = $('notices');
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 6) { list.lastChild.remove(); }
  };

  window.RelayView = { View: View, clockTime: clockTime };
}());
