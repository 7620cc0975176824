// Live view of the event relay: one WebSocket to /events on this host, speaking the relay's
// action/event protocol (Subscribe, Unsubscribe, Resume, Authenticate, Ping).
//
// Delivery guarantees the page keeps across reconnects:
// - Every event has a position on its exchange (`mq.seq`: 1, 2, 3, ... across all its keys),
//   numbered within an epoch (`Welcome.payload.epoch`). Every subscription (exact key or
//   wildcard) remembers `upto`, the newest position it has shown, and the epoch of it.
// - After a reconnect the page sends `Resume {routing_key: PATTERN, since: upto, epoch}` for
//   each subscription that has shown something (Resume subscribes it again); the relay
//   replays every event the pattern covers after that position, whatever its key.
// - Events a resuming subscription covers are held back until its `Resumed` arrives; then
//   they are shown unless already shown. Events are de-duplicated by (exchange, position).
// - `Resumed.recovered:false` means events were missed: the relay restarted (a new epoch,
//   whose positions are new numbers) or its history no longer reaches back far enough
//   (`first_seq` says where it restarts). The page says which.
// - `Resumed.more` means the replay was cut short: resume again from `last_seq`.
// - `Lagged` (events dropped for this page) is repaired with a Resume as well.
// Limitation: a subscription that has shown nothing yet is subscribed again, not resumed, so
// events published while the page was away do not reach it.
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
  // Positions remembered per exchange to drop repeats (replays and live events can overlap).
  var SEEN_WINDOW = 5000;
  // Events held back per subscription while it resumes; beyond this they are shown at once.
  var HOLD_MAX = 5000;
  var RESUMES_IN_FLIGHT = 8;
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

  // `?relay=/other/route` points the page at another relay route on the same Mongrel2 (the
  // demo's --amqp mode runs two relays); only a plain absolute path is taken.
  var route = new URLSearchParams(location.search).get('relay') || '/events';
  if (!/^\/[A-Za-z0-9._\/-]{0,100}$/.test(route)) route = '/events';
  window.RelayRoute = route;
  var wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + route;

  // ----- model -------------------------------------------------------------------------

  // id(exchange, pattern) -> {exchange, pattern, status: 'pending'|'active', li,
  //                           upto, epoch, resume, held}
  var subs = new Map();
  // exchange -> {seen: Set of positions shown, order: the same, oldest first}
  var exchanges = new Map();
  // tag -> what it was for, on the current connection only
  var pending = new Map();

  var ws = null;
  var live = false;
  var attempt = 0;
  var welcomes = 0;
  var retryTimer = null;
  var welcomeTimer = null;
  // The epoch of the positions in `exchanges` (Welcome.payload.epoch).
  var epoch = null;
  var pingTimer = null;
  var pongTimer = null;
  var token = null;
  var tagCounter = 0;
  var resumeQueue = [];
  var resumesInFlight = 0;
  function id(exchange, key) { return exchange + '\n' + key; }
  function isWildcard(pattern) { return pattern.charAt(pattern.length - 1) === '*'; }
  function matches(pattern, key) {
    return isWildcard(pattern) ? key.indexOf(pattern.slice(0, -1)) === 0 : pattern === key;
  }
  function subsCovering(exchange, key) {
    var found = [];
    subs.forEach(function (s) {
      if (s.exchange === exchange && matches(s.pattern, key)) { found.push(s); }
    });
    return found;
  }

  // Records a position as shown on its exchange; false if it was shown before.
  function markSeen(exchange, seq) {
    var ex = exchanges.get(exchange);
    if (!ex) {
      ex = { seen: new Set(), order: [] };
      exchanges.set(exchange, ex);
    }
    if (ex.seen.has(seq)) { return false; }
    ex.seen.add(seq);
    ex.order.push(seq);
    if (ex.order.length > SEEN_WINDOW) { ex.seen.delete(ex.order.shift()); }
    return true;
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
    subs.forEach(function (s) { s.resume = null; s.held = []; });
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
    var run = typeof payload.run === 'string' ? payload.run : null;
    var current = typeof payload.epoch === 'string' ? payload.epoch : run;
    view.showIdentity({
      id: text(payload.id, 200), run: run, relay: text(payload.relay, 200),
      member: text(payload.member, 200)
    });
    if (welcomes === 1 && subs.size === 0) { initialSubscriptions(payload.public); }
    if (epoch !== null && current !== epoch) {
      // Positions of another epoch are other numbers: what was shown cannot be matched
      // against them. Subscriptions still resume from their old epoch, so the relay says
      // what it can and cannot recover.
      exchanges.clear();
    }
    epoch = current;
    restore();
  }

  function restore() {
    // The relay handles a connection's messages in order, so the identity is in place
    // before the subscriptions that may need it.
    if (token !== null) { send('Authenticate', { token: token }, { kind: 'auth' }); }
    var toResume = [];
    subs.forEach(function (s) {
      if (s.upto !== null) { toResume.push(s); } else { sendSubscribe(s); }
    });
    if (toResume.length > 0) {
      var round = newRound(toResume.length);
      toResume.forEach(function (s) { queueResume(s, s.upto, round); });
    } else if (welcomes > 1) {
      view.showResume({ result: 'nothing', keys: 0, replayed: 0, from: null, at: Date.now() });
    }
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

  // One Welcome's resumes (or one Lagged repair), summarised when the last subscription
  // finishes.
  function newRound(n) {
    var round = { keys: n, left: n, replayed: 0, gap: false, restarted: false, from: null };
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

  // Holds the subscription's events back from now on, until its Resumed arrives.
  function queueResume(s, since, round) {
    if (s.resume) { roundKeyDone(round); return; }
    s.resume = { since: since, epoch: s.epoch, sent: false, round: round };
    resumeQueue.push(s);
    pumpResumes();
  }

  function pumpResumes() {
    while (live && resumesInFlight < RESUMES_IN_FLIGHT && resumeQueue.length > 0) {
      var s = resumeQueue.shift();
      if (!s.resume || s.resume.sent || !subs.has(id(s.exchange, s.pattern))) { continue; }
      sendResume(s);
    }
  }

  function sendResume(s) {
    s.resume.sent = true;
    resumesInFlight += 1;
    var payload = { exchange: s.exchange, routing_key: s.pattern, since: s.resume.since };
    if (s.resume.epoch !== null) { payload.epoch = s.resume.epoch; }
    send('Resume', payload, { kind: 'resume', sub: id(s.exchange, s.pattern) });
  }

  function finishResume(s) {
    var held = s.held;
    var round = s.resume ? s.resume.round : null;
    s.resume = null;
    s.held = [];
    held.forEach(function (msg) { if (accept(msg) && round) { round.replayed += 1; } });
    resumesInFlight = Math.max(0, resumesInFlight - 1);
    roundKeyDone(round);
    pumpResumes();
  }

  function onResumed(p, purpose) {
    var s = purpose ? subs.get(purpose.sub) : subs.get(id(p.exchange, p.routing_key));
    if (!s || !s.resume) { return; }
    setSubStatus(s, 'active');
    var since = s.resume.since;
    var lastSeq = Number.isSafeInteger(p.last_seq) ? p.last_seq : since;
    var current = typeof p.epoch === 'string' ? p.epoch : epoch;
    var restarted = current !== s.resume.epoch && s.resume.epoch !== null;
    var round = s.resume.round;
    if (round && text(p.from, 200)) { round.from = p.from; }
    if (p.recovered === false) {
      if (round) { if (restarted) { round.restarted = true; } else { round.gap = true; } }
      if (restarted) {
        notice('The relay restarted; ' + s.exchange + ' / ' + s.pattern +
               ' shows what it has kept since then.');
      } else {
        notice('Some events on ' + s.exchange + ' / ' + s.pattern +
               ' are no longer in the relay\'s history and were missed' +
               (Number.isSafeInteger(p.first_seq) ? ' (complete from ' + p.first_seq + ').' : '.'));
      }
    }
    // From here on the subscription's position is in the relay's epoch.
    s.epoch = current;
    s.upto = Math.max(s.upto === null || restarted ? 0 : s.upto, lastSeq);
    if (p.more === true) {
      // Show the part replayed so far; live events held after it wait for the rest.
      var held = s.held;
      s.held = held.filter(function (msg) { return msg.mq.seq > lastSeq; });
      held.forEach(function (msg) {
        if (msg.mq.seq <= lastSeq && accept(msg) && round) { round.replayed += 1; }
      });
      s.resume.since = lastSeq;
      s.resume.epoch = current;
      resumesInFlight = Math.max(0, resumesInFlight - 1);
      sendResume(s);
      return;
    }
    finishResume(s);
  }

  function onLagged(p) {
    if (typeof p.exchange !== 'string' || typeof p.routing_key !== 'string' ||
        !Number.isSafeInteger(p.last_seq)) { return; }
    subsCovering(p.exchange, p.routing_key).forEach(function (s) {
      var since = s.upto === null ? p.last_seq : Math.min(s.upto, p.last_seq);
      queueResume(s, since, s.resume ? null : newRound(1));
    });
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
      var r = subs.get(purpose.sub);
      if (r && r.resume) {
        if (r.resume.round) { r.resume.round.gap = true; }
        finishResume(r);
      }
      notice('Cannot resume ' + purpose.sub.replace('\n', ' / ') + ': ' + name);
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
    var covering = subsCovering(mq.e, mq.rk);
    for (var i = 0; i < covering.length; i += 1) {
      // Held by one resuming subscription is enough: it is shown when that one finishes.
      if (covering[i].resume && covering[i].held.length < HOLD_MAX) {
        covering[i].held.push(msg);
        return;
      }
    }
    accept(msg);
  }

  // Shows an event not shown before; true if it was shown.
  function accept(msg) {
    var mq = msg.mq;
    var covering = subsCovering(mq.e, mq.rk);
    if (covering.length === 0 || !markSeen(mq.e, mq.seq)) { return false; }
    covering.forEach(function (s) {
      if (s.epoch === epoch) {
        s.upto = s.upto === null ? mq.seq : Math.max(s.upto, mq.seq);
      } else if (!s.resume) {
        // A subscription that had shown nothing (or nothing in this epoch) starts here.
        s.epoch = epoch;
        s.upto = mq.seq;
      }
    });
    var now = Date.now();
    view.showDelay(view.addRow(msg, now));
    view.bump(mq.e, now);
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
    var s = { exchange: exchange, pattern: pattern, status: 'pending', li: li,
              upto: null, epoch: null, resume: null, held: [] };
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
    if (s.resume) { finishResume(s); }
  }

  function unsubscribe(s) {
    removeSub(s);
    syncUrl();
    renderSoon();
    if (live) { send('Unsubscribe', { exchange: s.exchange, routing_key: s.pattern }, null); }
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
