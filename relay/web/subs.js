// Which subscriptions a first visit starts with, and the address bar that follows them.
//
// `?sub=EXCHANGE/PATTERN` (repeatable, or comma-separated; a bare `?sub=EXCHANGE` means every
// key) wins over the relay's public list, `Welcome.payload.public`:
// `[{"exchange": "calls", "routing_keys": ["queue.*"]}, {"exchange": "agents"}]` (no keys =
// `*`; `routing_key` with one key is read too).
(function () {
  'use strict';

  // Subscriptions taken from the URL or the Welcome, at most: both are outside input.
  var INITIAL_MAX = 20;

  function valid(exchange, pattern) {
    return exchange.length > 0 && exchange.length <= 128 && pattern.length > 0 && pattern.length <= 256;
  }

  // [{exchange, pattern}] to subscribe to on the first Welcome.
  function initial(search, publicList) {
    var wanted = [];
    new URLSearchParams(search).getAll('sub').forEach(function (value) {
      value.split(',').forEach(function (item) {
        item = item.trim();
        if (!item) { return; }
        var slash = item.indexOf('/');
        var exchange = slash < 0 ? item : item.slice(0, slash);
        var pattern = slash < 0 ? '*' : item.slice(slash + 1) || '*';
        wanted.push({ exchange: exchange, pattern: pattern });
      });
    });
    if (wanted.length === 0 && Array.isArray(publicList)) {
      publicList.slice(0, INITIAL_MAX).forEach(function (p) {
        if (!p || typeof p !== 'object' || typeof p.exchange !== 'string') { return; }
        var patterns = Array.isArray(p.routing_keys) ? p.routing_keys
          : typeof p.routing_key === 'string' ? [p.routing_key] : ['*'];
        patterns.forEach(function (pattern) {
          if (typeof pattern === 'string') { wanted.push({ exchange: p.exchange, pattern: pattern }); }
        });
      });
    }
    var seen = new Set();
    return wanted.filter(function (w) {
      var k = w.exchange + '\n' + w.pattern;
      if (!valid(w.exchange, w.pattern) || seen.has(k)) { return false; }
      seen.add(k);
      return true;
    }).slice(0, INITIAL_MAX);
  }

  // Keeps the address bar naming the subscriptions, so a reload or a shared link shows the
  // same; with none, `sub` goes and a reload falls back to the relay's public list.
  function syncUrl(list) {
    var params = new URLSearchParams(location.search);
    params.delete('sub');
    list.forEach(function (s) { params.append('sub', s.exchange + '/' + s.pattern); });
    // `/` and `*` are legal in a query; leaving them unescaped keeps the link readable.
    var query = params.toString().replace(/%2F/gi, '/').replace(/%2A/gi, '*');
    try {
      history.replaceState(null, '', location.pathname + (query ? '?' + query : '') + location.hash);
    } catch (e) { /* a sandboxed or file: page may refuse; nothing depends on it */ }
  }

  window.RelaySubs = { initial: initial, syncUrl: syncUrl };
}());
