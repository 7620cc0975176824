// The call-centre wallboard: calls waiting per queue and agents ready, derived only from the
// events the page receives (the demo feed's, see README.md in this directory for the names
// and fields used). The page may join mid-stream, so calls offered before it loaded are not
// known: counts converge as those calls are answered or end, and never go below zero.
//
// Counts a test can read: #wallboard[data-waiting] (all queues), [data-queue=NAME] with
// data-waiting / data-talking / data-answered, #agents[data-ready] / [data-busy], and
// [data-agent=NAME][data-agent-state=ready|busy].
(function () {
  'use strict';

  // Peer-controlled names: bound what is tracked so a noisy feed cannot grow the page.
  var QUEUES_MAX = 24;
  var AGENTS_MAX = 60;
  var CALLS_PER_QUEUE_MAX = 5000;
  var CALL_EVENTS = { CallOffered: 1, CallAnswered: 1, CallEnded: 1 };
  var AGENT_EVENTS = { AgentBusy: 1, AgentReady: 1 };

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) { e.className = className; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  function clock(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var m = Math.floor(s / 60);
    s -= m * 60;
    return m + ':' + (s < 10 ? '0' : '') + s;
  }

  function name(v) { return typeof v === 'string' && v.length > 0 && v.length <= 64 ? v : null; }

  function Wallboard(root) {
    this.root = root;
    this.queuesEl = root.querySelector('.queues');
    this.agentsEl = root.querySelector('#agents');
    this.queues = new Map();
    this.agents = new Map();
    this.seen = false;
  }

  Wallboard.prototype.queue = function (qname) {
    var q = this.queues.get(qname);
    if (!q && this.queues.size < QUEUES_MAX) {
      q = { waiting: new Map(), talking: new Map(), answered: 0, waitSum: 0, waitCount: 0 };
      this.queues.set(qname, q);
    }
    return q || null;
  };

  // Feeds one accepted event; true when it changed the wallboard.
  Wallboard.prototype.observe = function (msg, now) {
    var p = msg.payload && typeof msg.payload === 'object' ? msg.payload : {};
    if (CALL_EVENTS[msg.event] === 1) { return this.call(msg, p, now); }
    if (AGENT_EVENTS[msg.event] === 1) { return this.agent(msg, p, now); }
    return false;
  };

  Wallboard.prototype.call = function (msg, p, now) {
    var rk = msg.mq.rk;
    var qname = rk.indexOf('queue.') === 0 ? rk.slice(6) : name(p.queue) || rk;
    var q = this.queue(qname.slice(0, 64));
    if (!q) { return false; }
    this.seen = true;
    var hasId = typeof p.call_id === 'number' || typeof p.call_id === 'string';
    var callId = hasId ? String(p.call_id) : null;
    // A call replayed after a reconnect has waited since it was published, not since now.
    var at = typeof msg.mq.ts === 'number' && isFinite(msg.mq.ts) ? Math.min(msg.mq.ts, now) : now;
    if (msg.event === 'CallOffered') {
      if (q.waiting.size < CALLS_PER_QUEUE_MAX) {
        q.waiting.set(callId || 'seq ' + msg.mq.seq + ' ' + rk, at);
      }
    } else if (msg.event === 'CallAnswered') {
      // Without ids, the longest-waiting call is taken to be the one answered.
      takeCall(q.waiting, callId);
      if (q.talking.size < CALLS_PER_QUEUE_MAX) {
        q.talking.set(callId || 'seq ' + msg.mq.seq + ' ' + rk, at);
      }
      q.answered += 1;
      if (typeof p.wait_s === 'number' && isFinite(p.wait_s) && p.wait_s >= 0) {
        q.waitSum += p.wait_s;
        q.waitCount += 1;
      }
    } else {
      if (!takeCall(q.talking, callId)) { takeCall(q.waiting, callId); }
    }
    return true;
  };

  // Removes callId (or, when null, the oldest call); false when there was nothing to remove.
  function takeCall(calls, callId) {
    if (callId !== null) { return calls.delete(callId); }
    var oldest = calls.keys().next();
    if (oldest.done) { return false; }
    calls.delete(oldest.value);
    return true;
  }

  Wallboard.prototype.agent = function (msg, p, now) {
    var rk = msg.mq.rk;
    var aname = name(p.agent) || (rk.indexOf('agent.') === 0 ? rk.slice(6) : rk);
    aname = aname.slice(0, 64);
    if (!this.agents.has(aname) && this.agents.size >= AGENTS_MAX) { return false; }
    this.seen = true;
    this.agents.set(aname, {
      state: msg.event === 'AgentReady' ? 'ready' : 'busy',
      queue: msg.event === 'AgentBusy' ? name(p.queue) : null,
      since: now
    });
    return true;
  };

  Wallboard.prototype.render = function (now) {
    this.root.hidden = !this.seen;
    var totalWaiting = 0;
    var names = Array.from(this.queues.keys()).sort();
    var frag = document.createDocumentFragment();
    var self = this;
    names.forEach(function (qname) {
      var q = self.queues.get(qname);
      totalWaiting += q.waiting.size;
      var card = el('div', 'queue');
      card.dataset.queue = qname;
      card.dataset.waiting = String(q.waiting.size);
      card.dataset.talking = String(q.talking.size);
      card.dataset.answered = String(q.answered);
      card.dataset.level = q.waiting.size === 0 ? 'calm' : q.waiting.size < 4 ? 'busy' : 'high';
      card.appendChild(el('div', 'q-name', qname));
      var big = el('div', 'big');
      big.appendChild(el('span', 'n', String(q.waiting.size)));
      big.appendChild(el('span', 'unit', 'waiting'));
      card.appendChild(big);
      var oldest = q.waiting.values().next();
      var facts = el('dl', 'facts');
      fact(facts, 'longest', oldest.done ? '—' : clock(now - oldest.value));
      fact(facts, 'talking', String(q.talking.size));
      fact(facts, 'answered', String(q.answered));
      fact(facts, 'avg wait', q.waitCount ? (q.waitSum / q.waitCount).toFixed(1) + ' s' : '—');
      card.appendChild(facts);
      frag.appendChild(card);
    });
    this.queuesEl.replaceChildren(frag);
    this.root.dataset.waiting = String(totalWaiting);

    var ready = 0;
    var busy = 0;
    var chips = el('ul', 'agent-list');
    Array.from(this.agents.keys()).sort().forEach(function (aname) {
      var a = self.agents.get(aname);
      if (a.state === 'ready') { ready += 1; } else { busy += 1; }
      var li = el('li', 'agent');
      li.dataset.agent = aname;
      li.dataset.agentState = a.state;
      li.appendChild(el('span', 'a-name', aname));
      li.appendChild(el('span', 'a-state', a.state === 'busy' && a.queue ? a.queue : a.state));
      li.title = aname + ': ' + a.state + ' for ' + clock(now - a.since);
      chips.appendChild(li);
    });
    this.agentsEl.dataset.ready = String(ready);
    this.agentsEl.dataset.busy = String(busy);
    this.root.dataset.ready = String(ready);
    var head = el('div', 'big');
    head.appendChild(el('span', 'n', String(ready)));
    head.appendChild(el('span', 'unit', 'agents ready'));
    var sub = el('p', 'agents-sub', busy + ' busy · ' + this.agents.size + ' seen');
    this.agentsEl.replaceChildren(el('div', 'q-name', 'agents'), head, sub, chips);
  };

  function fact(dl, label, value) {
    var div = el('div');
    div.appendChild(el('dt', null, label));
    div.appendChild(el('dd', null, value));
    dl.appendChild(div);
  }

  window.RelayWallboard = { Wallboard: Wallboard };
}());
