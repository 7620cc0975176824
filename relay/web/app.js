// Live view of the event relay: one WebSocket to /events on this host, speaking the relay's
// action/event protocol (Subscribe, Unsubscribe, Resume, Authenticate, Ping).
//
// Delivery guarantees the page keeps across reconnects:
// - Every (exchange, routing key) it has seen events on remembers `upto`, the highest seq
//   seen with nothing missing below it (from the first seq seen). After a reconnect the page
//   re-subscribes and sends `Resume {since: upto}` for each such key, so events published
//   while it was away are replayed from the relay's history.
// - Replays and live events can overlap; events are de-duplicated by (exchange, key, seq).
// - Events on a key that is being resumed are held back until its `Resumed` arrives, because
//   only then does the page know whether the relay restarted (seqs start again at 1, so old
//   seqs must not count as duplicates) or history was lost (a gap to announce).
// - `Resumed.more` means the replay was cut short: resume again from `last_seq`.
// - `Lagged` (events dropped for this page) is repaired with a Resume as well.
// - A relay that restarted has lost its history and numbers every key from 1 again, so a
//   Resume from an old seq could skip its new events. Each Welcome names the relay's run
//   (`payload.run`); after a restart every key resumes from 0.
// Limitation: history is per exact key, so keys under a wildcard that had no event before the
// disconnect cannot be resumed; their gap events are not replayed.
//
// First visit: the page subscribes to what the URL names (`?sub=EXCHANGE/PATTERN`, repeatable
// or comma-separated), else to what the Welcome marks public (`payload.public`); the address
// bar then follows the subscriptions. What the page reads from the relay is listed in
// README.md in this directory. Rendering lives in view.js, charts.js and wallboard.js.
(function () {
  'use strict';

  var ROW_CAP = 200;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var PING_EVERY_MS = 20000;
  var PONG_TIMEOUT_MS = 10000;
  // Out-of-order seqs remembered per key before the hole below them is given up on.
  var SEEN_WINDOW = 1000;
  // Events held back per key while it resumes; beyond this they are processed at once.
  var HOLD_MAX = 5000;
  // Keys resumed after a reconnect, most recently active first; each Resume briefly adds an
  // exact subscription on the relay, which limits subscriptions per session.
  var RESUME_KEYS_MAX = 50;
  var RESUMES_IN_FLIGHT = 8;
  // Keys tracked for dedupe and Resume; the least recently active is forgotten beyond this.
  var KEYS_MAX = 5000;
  // A connection that has not been welcomed by then is given up and retried (Mongrel2
  // holds a handshake while no relay is connected).
  var WELCOME_TIMEOUT_MS = 10000;
  // How soon after an event the wallboard and charts are redrawn (coalescing bursts).
  var RENDER_DELAY_MS = 60;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    state: $('state'),
    form: $('subscribe-form'),
    exchange: $('exchange'),
    routingKey: $('routing-key'),
    subs: $('subscriptions'),
    authForm: $('auth-form'),
    token: $('token'),
    identity: $('identity'),
    wallboard: $('wallboard')
  };
  $('cap').textContent = String(ROW_CAP);
  $('window-min').textContent = String(window.RelayCharts.WINDOW_MINUTES);
  var view = new window.RelayView.View(ROW_CAP);
  var board = new window.RelayWallboard.Wallboard(ui.wallboard);
  var renderTimer = null;

  var wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/events';

  // ----- model -------------------------------------------------------------------------

  // id(exchange, pattern) -> {exchange, pattern, status: 'pending'|'active', li}
  var subs = new Map();
  // id(exchange, key) -> {exchange, key, upto, seen, resume, held, implicit, touched}
  var keys = new Map();
  // tag -> what it was for, on the current connection only
  var pending = new Map();

  var ws = null;
  var live = false;
  var attempt = 0;
  var welcomes = 0;
  var retryTimer = null;
  var welcomeTimer = null;
  // Which run of the relay the keys' seqs belong to (Welcome.payload.run).
  var run = null;
  var pingTimer = null;
  var pongTimer = null;
  var token = null;
  var tagCounter = 0;
  var touchCounter = 0;
  var resumeQueue = [];
  var resumesInFlight = 0;
  // The Welcome named a new run of the relay: the next resume round replays a fresh history.
  var runChanged = false;

  function id(exchange, key) { return exchange + '\n' + key; }
  function isWildcard(pattern) { return pattern.charAt(pattern.length - 1) === '*'; }
  function matches(pattern, key) {
    return isWildcard(pattern) ? key.indexOf(pattern.slice(0, -1)) === 0 : pattern === key;
  }
  function covered(exchange, key) {
    var found = false;
    subs.forEach(function (s) {
      if (!found && s.exchange === exchange && matches(s.pattern, key)) { found = true; }
    });
    return found;
  }
  function explicitlySubscribed(exchange, key) { return subs.has(id(exchange, key)); }

  function keyState(exchange, key) {
    var k = keys.get(id(exchange, key));
    if (!k) {
      if (keys.size >= KEYS_MAX) { forgetStalestKey(); }
      k = { exchange: exchange, key: key, upto: null, seen: new Set(), resume: null, held: [],
            implicit: false, touched: 0 };
      keys.set(id(exchange, key), k);
    }
    return k;
  }

  function forgetStalestKey() {
    var stalest = null;
    keys.forEach(function (k, kid) {
      if (!k.resume && (stalest === null || k.touched < keys.get(stalest).touched)) { stalest = kid; }
    });
    if (stalest !== null) { keys.delete(stalest); }
  }

  // Records seq as seen; false if it was seen before.
  function markSeen(k, seq) {
    if (k.upto === null) { k.upto = seq - 1; }
    if (seq <= k.upto || k.seen.has(seq)) { return false; }
    k.seen.add(seq);
    if (k.seen.size > SEEN_WINDOW) { skipHole(k); }
    advance(k);
    return true;
  }

  function advance(k) {
    while (k.seen.has(k.upto + 1)) {
      k.upto += 1;
      k.seen.delete(k.upto);
    }
  }

  // The events below the lowest seq held out of order will not come: stop waiting for them.
  function skipHole(k) {
    var lowest = Infinity;
    k.seen.forEach(function (s) { if (s < lowest) { lowest = s; } });
    if (lowest !== Infinity) { k.upto = Math.max(k.upto, lowest - 1); advance(k); }
  }

  // ----- connection --------------------------------------------------------------------

  function setState(state, detail) {
    ui.state.dataset.state = state;
    ui.state.textContent = detail ? state + ' (' + detail + ')' : state;
  }

  function connect() {
    retryTimer = null;
    setState(welcomes === 0 ? 'connecting' : 'reconnecting', attempt > 0 ? 'attempt ' + (attempt + 1) : '');
    var sock;
    try {
      sock = new WebSocket(wsUrl);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    welcomeTimer = setTimeout(function () { if (ws === sock) { lost(); } }, WELCOME_TIMEOUT_MS);
    sock.onmessage = function (m) { if (ws === sock) { onMessage(m.data); } };
    sock.onclose = function () { if (ws === sock) { lost(); } };
    // An error is always followed by close, which does the work.
    sock.onerror = function () {};
  }

  function lost() {
    if (ws) {
      var old = ws;
      ws = null;
      old.onmessage = old.onclose = null;
      try { old.close(); } catch (e) { /* already closed */ }
    }
    live = false;
    clearTimeout(welcomeTimer);
    clearTimeout(pingTimer);
    clearTimeout(pongTimer);
    pending.clear();
    resumeQueue = [];
    resumesInFlight = 0;
    // Held events will be replayed after the next Resume; drop them rather than guess.
    keys.forEach(function (k) { k.resume = null; k.held = []; k.implicit = false; });
    subs.forEach(function (s) { setSubStatus(s, 'pending'); });
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (retryTimer !== null) { return; }
    // Exponential backoff with jitter, so a restarted server is not hit by every page at once.
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    var delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    attempt += 1;
    setState(welcomes === 0 ? 'connecting' : 'reconnecting',
             'retry in ' + (delay / 1000).toFixed(1) + ' s');
    retryTimer = setTimeout(connect, delay);
  }

  function send(action, payload, purpose) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { return null; }
    tagCounter += 1;
    var tag = 't' + tagCounter;
    if (purpose) { pending.set(tag, purpose); }
    ws.send(JSON.stringify({ action: action, tag: tag, payload: payload || {} }));
    return tag;
  }

  function schedulePing() {
    clearTimeout(pingTimer);
    pingTimer = setTimeout(function () {
      if (!live) { return; }
      send('Ping', {}, { kind: 'ping' });
      // A relay that restarted behind a running Mongrel2 no longer knows this connection
      // and stays silent: treat a missing Pong as a lost connection.
      pongTimer = setTimeout(function () {
        notice('No answer from the relay; reconnecting.');
        lost();
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function onWelcome(payload) {
    clearTimeout(welcomeTimer);
    attempt = 0;
    welcomes += 1;
    ui.state.dataset.session = typeof payload.id === 'string' ? payload.id : '';
    ui.state.dataset.welcomes = String(welcomes);
    setState('live');
    schedulePing();
    // From here on actions go out at once; until now they waited for restore().
    live = true;
    var current = typeof payload.run === 'string' ? payload.run : null;
    view.showIdentity({
      id: text(payload.id, 200), run: current, relay: text(payload.relay, 200),
      member: text(payload.member, 200)
    });
    if (welcomes === 1 && subs.size === 0) { initialSubscriptions(payload.public); }
    if (run !== null && current !== null && current !== run) {
      runChanged = true;
      if (keys.size > 0) {
        notice('The relay restarted; replaying what it has kept since then.');
      }
      // Seqs start again at 1 in a new run: forget the old ones and resume from 0.
      keys.forEach(function (k) {
        if (k.upto !== null) { k.upto = 0; k.seen.clear(); }
      });
    }
    if (current !== null) { run = current; }
    restore();
  }

  function restore() {
    // The relay handles a connection's messages in order, so the identity is in place
    // before the subscriptions that may need it.
    if (token !== null) { send('Authenticate', { token: token }, { kind: 'auth' }); }
    subs.forEach(sendSubscribe);
    var toResume = [];
    keys.forEach(function (k) {
      if (k.upto !== null && covered(k.exchange, k.key)) { toResume.push(k); }
    });
    toResume.sort(function (a, b) { return b.touched - a.touched; });
    toResume = toResume.slice(0, RESUME_KEYS_MAX);
    if (toResume.length > 0) {
      var round = newRound(toResume.length);
      toResume.forEach(function (k) { queueResume(k, k.upto, round); });
    } else if (welcomes > 1) {
      view.showResume({ result: 'nothing', keys: 0, replayed: 0, from: null, at: Date.now() });
    }
    runChanged = false;
    renderSoon();
  }

  // A string field from the relay, or null when absent, not a string or too long to show.
  function text(v, max) { return typeof v === 'string' && v.length > 0 && v.length <= max ? v : null; }

  // The URL's `sub` parameters, else the Welcome's public list.
  function initialSubscriptions(publicList) {
    window.RelaySubs.initial(location.search, publicList).forEach(function (w) {
      if (!subs.has(id(w.exchange, w.pattern))) { addSub(w.exchange, w.pattern); }
    });
  }

  function syncUrl() { window.RelaySubs.syncUrl(Array.from(subs.values())); }

  // One Welcome's resumes (or one Lagged repair), summarised when the last key finishes.
  function newRound(n) {
    var round = { keys: n, left: n, replayed: 0, gap: false, restarted: runChanged, from: null };
    view.showResume({ result: 'pending', keys: n, replayed: 0, from: null, at: Date.now() });
    return round;
  }

  function roundKeyDone(round) {
    if (!round) { return; }
    round.left -= 1;
    if (round.left > 0) { return; }
    view.showResume({
      result: round.restarted ? 'restarted' : round.gap ? 'gap' : 'recovered',
      keys: round.keys, replayed: round.replayed, from: round.from, at: Date.now()
    });
  }

  // ----- actions -----------------------------------------------------------------------

  function sendSubscribe(s) {
    setSubStatus(s, 'pending');
    send('Subscribe', { exchange: s.exchange, routing_key: s.pattern },
         { kind: 'subscribe', sub: id(s.exchange, s.pattern) });
  }

  // Holds the key's events back from now on, until its Resumed arrives.
  function queueResume(k, since, round) {
    if (k.resume) { roundKeyDone(round); return; }
    k.resume = { since: since, sent: false, round: round };
    resumeQueue.push(k);
    pumpResumes();
  }

  function pumpResumes() {
    while (live && resumesInFlight < RESUMES_IN_FLIGHT && resumeQueue.length > 0) {
      var k = resumeQueue.shift();
      if (!k.resume || k.resume.sent) { continue; }
      sendResume(k);
    }
  }

  function sendResume(k) {
    k.resume.sent = true;
    // Resume subscribes the exact key; remember to drop that again if a wildcard covers it.
    if (!explicitlySubscribed(k.exchange, k.key)) { k.implicit = true; }
    resumesInFlight += 1;
    send('Resume', { exchange: k.exchange, routing_key: k.key, since: k.resume.since },
         { kind: 'resume', key: id(k.exchange, k.key) });
  }

  function finishResume(k) {
    var held = k.held;
    var round = k.resume ? k.resume.round : null;
    k.resume = null;
    k.held = [];
    held.forEach(function (msg) { accept(k, msg); });
    resumesInFlight = Math.max(0, resumesInFlight - 1);
    if (k.implicit && !explicitlySubscribed(k.exchange, k.key)) {
      k.implicit = false;
      send('Unsubscribe', { exchange: k.exchange, routing_key: k.key }, null);
    }
    roundKeyDone(round);
    pumpResumes();
  }

  function onResumed(p, purpose) {
    var k = purpose ? keys.get(purpose.key) : keys.get(id(p.exchange, p.routing_key));
    if (!k || !k.resume) { return; }
    var since = k.resume.since;
    var lastSeq = Number.isSafeInteger(p.last_seq) ? p.last_seq : since;
    var round = k.resume.round;
    if (round && text(p.from, 200)) { round.from = p.from; }
    if (p.recovered === false && round) {
      if (lastSeq < since) { round.restarted = true; } else { round.gap = true; }
    }
    if (p.recovered === false) {
      if (lastSeq < since) {
        // The relay's seqs on this key went backwards: it restarted (or forgot the key), so
        // what it replays is new even where the seq numbers look familiar.
        k.upto = 0;
        k.seen.clear();
        notice('The relay restarted; ' + k.exchange + ' / ' + k.key +
               ' shows what it has kept since then.');
      } else {
        notice('Some events on ' + k.exchange + ' / ' + k.key +
               ' are no longer in the relay\'s history and were missed.');
      }
    }
    var held = k.held;
    k.held = [];
    held.forEach(function (msg) { if (accept(k, msg) && round) { round.replayed += 1; } });
    if (p.recovered === false && lastSeq >= since) {
      skipHole(k);
      if (k.seen.size === 0) { k.upto = Math.max(k.upto, lastSeq); }
    }
    if (p.more === true) {
      k.resume.since = lastSeq;
      resumesInFlight = Math.max(0, resumesInFlight - 1);
      sendResume(k);
      return;
    }
    finishResume(k);
  }

  function onLagged(p) {
    if (typeof p.exchange !== 'string' || typeof p.routing_key !== 'string' ||
        !Number.isSafeInteger(p.last_seq)) { return; }
    var k = keyState(p.exchange, p.routing_key);
    var since = k.upto === null ? p.last_seq : Math.min(k.upto, p.last_seq);
    queueResume(k, since, k.resume ? null : newRound(1));
  }

  // ----- incoming ----------------------------------------------------------------------

  function onMessage(data) {
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    if (!msg || typeof msg !== 'object' || typeof msg.event !== 'string') { return; }
    var payload = msg.payload && typeof msg.payload === 'object' ? msg.payload : {};
    var purpose = typeof msg.tag === 'string' ? pending.get(msg.tag) : undefined;
    if (purpose) { pending.delete(msg.tag); }
    if (msg.mq && typeof msg.mq === 'object') { onEvent(msg); return; }
    switch (msg.event) {
      case 'Welcome': onWelcome(payload); break;
      case 'Subscribed':
        if (purpose && purpose.kind === 'subscribe' && subs.has(purpose.sub)) {
          setSubStatus(subs.get(purpose.sub), 'active');
        }
        break;
      case 'Resumed': onResumed(payload, purpose && purpose.kind === 'resume' ? purpose : null); break;
      case 'Lagged': onLagged(payload); break;
      case 'Pong': clearTimeout(pongTimer); schedulePing(); break;
      case 'Authenticated':
        ui.identity.textContent = typeof payload.name === 'string' ? 'as ' + payload.name : '';
        break;
      case 'Error': onError(payload, purpose); break;
      default: break;
    }
  }

  function onError(payload, purpose) {
    var name = typeof payload.error === 'string' ? payload.error : 'Error';
    if (!purpose) { notice('Relay error: ' + name); return; }
    if (purpose.kind === 'subscribe') {
      var s = subs.get(purpose.sub);
      if (!s) { return; }
      if (name === 'AlreadySubscribed') { setSubStatus(s, 'active'); return; }
      removeSub(s);
      notice('Cannot subscribe to ' + s.exchange + ' / ' + s.pattern + ': ' + name);
    } else if (purpose.kind === 'resume') {
      var k = keys.get(purpose.key);
      if (k && k.resume) {
        if (k.resume.round) { k.resume.round.gap = true; }
        finishResume(k);
      }
      notice('Cannot resume ' + purpose.key.replace('\n', ' / ') + ': ' + name);
    } else if (purpose.kind === 'auth') {
      token = null;
      ui.identity.textContent = '';
      notice('Authentication failed: ' + name);
    } else if (purpose.kind === 'ping') {
      clearTimeout(pongTimer);
      schedulePing();
    } else {
      notice('Relay error: ' + name);
    }
  }

  function onEvent(msg) {
    var mq = msg.mq;
    if (typeof mq.e !== 'string' || typeof mq.rk !== 'string' || !Number.isSafeInteger(mq.seq)) {
      return;
    }
    if (!covered(mq.e, mq.rk)) { return; }
    var k = keyState(mq.e, mq.rk);
    if (k.resume && k.held.length < HOLD_MAX) {
      k.held.push(msg);
      return;
    }
    accept(k, msg);
  }

  // Shows an event that is new on its key; true if it was shown.
  function accept(k, msg) {
    if (!markSeen(k, msg.mq.seq)) { return false; }
    touchCounter += 1;
    k.touched = touchCounter;
    if (!covered(k.exchange, k.key)) { return false; }
    var now = Date.now();
    view.showDelay(view.addRow(msg, now));
    view.bump(k.exchange, now);
    board.observe(msg, now);
    renderSoon();
    return true;
  }

  // ----- rendering ---------------------------------------------------------------------

  function renderSoon() {
    if (renderTimer !== null) { return; }
    renderTimer = setTimeout(render, RENDER_DELAY_MS);
  }

  function render() {
    clearTimeout(renderTimer);
    renderTimer = null;
    var now = Date.now();
    view.tick(now);
    board.render(now);
    view.showEmpty({ welcomed: welcomes > 0, subs: Array.from(subs.values()) });
  }

  function setSubStatus(s, status) {
    s.status = status;
    s.li.dataset.status = status;
    s.li.querySelector('.status').textContent = status;
  }

  function addSub(exchange, pattern) {
    var li = document.createElement('li');
    li.dataset.exchange = exchange;
    li.dataset.key = pattern;
    var name = document.createElement('span');
    name.className = 'sub-name';
    name.textContent = exchange + ' / ' + pattern;
    var status = document.createElement('span');
    status.className = 'status';
    var button = document.createElement('button');
    button.type = 'button';
    button.className = 'unsubscribe';
    button.textContent = 'Unsubscribe';
    button.setAttribute('aria-label', 'Unsubscribe from ' + exchange + ' ' + pattern);
    li.appendChild(name);
    li.appendChild(status);
    li.appendChild(button);
    var s = { exchange: exchange, pattern: pattern, status: 'pending', li: li };
    button.addEventListener('click', function () { unsubscribe(s); });
    subs.set(id(exchange, pattern), s);
    ui.subs.appendChild(li);
    setSubStatus(s, 'pending');
    renderSoon();
    return s;
  }

  function removeSub(s) {
    subs.delete(id(s.exchange, s.pattern));
    s.li.remove();
    // Forget keys nothing covers any more; a later subscription starts afresh.
    keys.forEach(function (k, kid) {
      if (!covered(k.exchange, k.key)) { keys.delete(kid); }
    });
  }

  function unsubscribe(s) {
    // Exact keys that Resume subscribed under this wildcard go too.
    var extra = [];
    keys.forEach(function (k) {
      if (k.implicit && k.exchange === s.exchange && k.key !== s.pattern && matches(s.pattern, k.key)) {
        extra.push(k.key);
        k.implicit = false;
      }
    });
    removeSub(s);
    syncUrl();
    renderSoon();
    if (live) {
      send('Unsubscribe', { exchange: s.exchange, routing_keys: [s.pattern].concat(extra) }, null);
    }
    ui.routingKey.focus();
  }

  function notice(message) { view.notice(message); }

  // ----- forms -------------------------------------------------------------------------

  ui.form.addEventListener('submit', function (e) {
    e.preventDefault();
    var exchange = ui.exchange.value.trim();
    var pattern = ui.routingKey.value.trim();
    if (!exchange || !pattern) { return; }
    if (subs.has(id(exchange, pattern))) {
      notice('Already subscribed to ' + exchange + ' / ' + pattern + '.');
      return;
    }
    var s = addSub(exchange, pattern);
    syncUrl();
    if (live) { sendSubscribe(s); }
  });

  ui.authForm.addEventListener('submit', function (e) {
    e.preventDefault();
    var t = ui.token.value;
    if (!t) { return; }
    // Kept in memory only, to authenticate again after a reconnect.
    token = t;
    ui.token.value = '';
    if (live) { send('Authenticate', { token: t }, { kind: 'auth' }); }
  });

  // Charts scroll and wait clocks tick even when no event arrives.
  setInterval(render, 1000);
  render();
  connect();
}());
