/* PocketPing widget: plain JavaScript, no build step.
 * <script src="/pocketping/widget.js" data-endpoint="/pocketping"></script>
 * Options (data-* attribute or PocketPing.init({...})): endpoint, title, operatorName,
 * primaryColor, position (bottom-right|bottom-left), welcomeMessage, placeholder, autoOpen,
 * onMessage, onEvent, onConnect, onOpen, onClose.
 * Page API: PocketPing.open(), close(), toggle(), send(text), trigger(name, data),
 * on(name, fn) / off(name, fn) with 'message', 'event', 'event:<name>', 'connect', 'open',
 * 'close', 'transport'. Message text is only ever set with textContent. */
(function (w, d) {
  'use strict';
  if (w.PocketPing && w.PocketPing.kind === 'pocketping-py') return;
  var LS = w.localStorage, VKEY = 'pocketping_visitor_id', SKEY = 'pocketping_session_id', OKEY = 'pocketping_open';
  var cfg, base, sid, vid, root, ui = {}, msgs = {}, order = [], pending = [], handlers = {};
  var mode = null, ws = null, es = null, pollT = null, retryT = null, fails = 0, online = false, gen = 0;
  var isOpen = false, started = false, typingAt = 0, readT = null, lastLadder = 0;

  function store(k, v) { try { if (v == null) LS.removeItem(k); else LS.setItem(k, v); } catch (e) {} }
  function load(k) { try { return LS.getItem(k); } catch (e) { return null; } }
  function emit(name) {
    var args = [].slice.call(arguments, 1), list = (handlers[name] || []).slice();
    for (var i = 0; i < list.length; i++) { try { list[i].apply(null, args); } catch (e) { console.error('PocketPing handler', e); } }
  }
  function el(tag, attrs, text) {
    var e = d.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function api(method, path, body) {
    return fetch(base + path, {
      method: method, headers: { 'Content-Type': 'application/json' },
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      if (!r.ok) throw new Error('PocketPing API error: ' + r.status);
      return r.json();
    });
  }

  /* ---- messages ---- */
  function cursor() {
    var max = '';
    for (var i = 0; i < order.length; i++) {
      var r = msgs[order[i]], m = r.m;
      if (r.own) continue; // stamped by our own POST: older replies we have not seen may precede it
      [m.timestamp, m.editedAt, m.deletedAt, m.deliveredAt, m.readAt].forEach(function (t) { if (t && t > max) max = t; });
    }
    return max;
  }
  function mine(m) { return m.sender === 'visitor'; }
  function unread() {
    var n = 0;
    for (var i = 0; i < order.length; i++) { var m = msgs[order[i]].m; if (!mine(m) && m.status !== 'read' && !m.deletedAt) n++; }
    return n;
  }
  function upsert(m, live) {
    if (!m || !m.id) return;
    var known = msgs[m.id];
    if (!known && mine(m)) {
      for (var i = 0; i < pending.length; i++) {
        if (pending[i].m.content === m.content) { known = adopt(pending.splice(i, 1)[0], m.id); break; }
      }
    }
    if (known) {
      if (m.timestamp) known.own = 0; // seen in the server's feed
      for (var k in m) known.m[k] = m[k];
      paint(known);
    } else {
      var rec = { m: m };
      msgs[m.id] = rec; order.push(m.id);
      paint(rec);
      if (!mine(m)) {
        showTyping(false);
        if (live) { emit('message', m); if (cfg.autoOpen && !isOpen) open(); }
      }
    }
    badge(); scheduleRead();
  }
  function adopt(rec, id) {
    delete msgs[rec.m.id]; order[order.indexOf(rec.m.id)] = id;
    rec.m.id = id; msgs[id] = rec; rec.el.setAttribute('data-id', id);
    return rec;
  }
  function paint(rec) {
    var m = rec.m;
    if (!rec.el) {
      rec.el = el('li', { 'class': 'pp-m pp-' + (mine(m) ? 'me' : 'op'), 'data-id': m.id });
      rec.txt = rec.el.appendChild(el('span', { 'class': 'pp-t' }));
      rec.meta = rec.el.appendChild(el('small'));
      if (ui.list) ui.list.appendChild(rec.el);
      if (ui.welcome) ui.welcome.hidden = true;
    }
    rec.txt.textContent = m.deletedAt ? 'Message deleted' : m.content;
    rec.el.classList.toggle('pp-del', !!m.deletedAt);
    var who = mine(m) ? 'You' : m.sender === 'ai' ? 'AI' : (m.metadata && m.metadata.operatorName) || cfg.operatorName;
    var t = new Date(m.timestamp), when = isNaN(t) ? '' : t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    var tick = mine(m) ? ({ sending: ' · sending', sent: ' · sent', delivered: ' · delivered', read: ' · read' }[m.status] || '') : '';
    rec.meta.textContent = who + ' ' + when + (m.editedAt && !m.deletedAt ? ' · edited' : '') + tick;
    (m.attachments || []).forEach(function (a, i) {
      if (rec['a' + i] || !/^(https?:|\/)/.test(a.url || '')) return;
      rec['a' + i] = rec.el.insertBefore(el('a', { href: a.url, target: '_blank', rel: 'noopener' }, a.filename || 'file'), rec.meta);
    });
    if (ui.list) ui.list.scrollTop = ui.list.scrollHeight;
  }
  function send(text) {
    text = String(text == null ? '' : text);
    if (!text.trim() || !sid) return Promise.resolve(null);
    var rec = { own: 1, m: { id: 'temp-' + Date.now() + Math.random(), content: text, sender: 'visitor', timestamp: new Date().toISOString(), status: 'sending' } };
    msgs[rec.m.id] = rec; order.push(rec.m.id); pending.push(rec); paint(rec);
    return api('POST', '/message', { sessionId: sid, content: text, sender: 'visitor', attachmentIds: [] }).then(function (r) {
      var i = pending.indexOf(rec);
      if (i >= 0) { pending.splice(i, 1); adopt(rec, r.messageId); }
      else if (rec.m.id !== r.messageId && msgs[r.messageId]) return r;
      rec.m.timestamp = r.timestamp; if (rec.m.status === 'sending') rec.m.status = 'sent';
      paint(rec); return r;
    }, function (e) {
      var i = pending.indexOf(rec); if (i >= 0) pending.splice(i, 1);
      delete msgs[rec.m.id]; order.splice(order.indexOf(rec.m.id), 1); rec.el.remove();
      note('Message not sent. Please try again.');
      if (ui.input && !ui.input.value) ui.input.value = text;
      throw e;
    });
  }

  /* ---- realtime: WebSocket, then SSE, then polling ---- */
  function onFrame(raw) {
    var f; try { f = JSON.parse(raw); } catch (e) { return; }
    var x = f && f.data || {};
    switch (f && f.type) {
      case 'message': upsert(x, true); break;
      case 'typing': if (x.sender !== 'visitor') showTyping(!!x.isTyping); break;
      case 'presence': presence(!!x.online); break;
      case 'read':
        (x.messageIds || []).forEach(function (id) {
          var r = msgs[id]; if (!r) return;
          r.m.status = x.status; if (x.readAt) r.m.readAt = x.readAt; if (x.deliveredAt) r.m.deliveredAt = x.deliveredAt; paint(r);
        });
        badge(); break;
      case 'message_edited': if (msgs[x.messageId]) { upsert({ id: x.messageId, content: x.content, editedAt: x.editedAt || new Date().toISOString() }); } break;
      case 'message_deleted': if (msgs[x.messageId]) { upsert({ id: x.messageId, content: '', deletedAt: x.deletedAt || new Date().toISOString() }); } break;
      case 'event':
        if (x.name === 'session_closed') note('This conversation has been closed. Write again any time.');
        emit('event', x); emit('event:' + x.name, x.data || {}, x);
        break;
    }
  }
  function setMode(m) { if (mode !== m) { mode = m; emit('transport', m); } }
  function stop() {
    clearTimeout(retryT); clearTimeout(pollT); retryT = pollT = null; gen++; // requests in flight start nothing
    if (ws) { ws.onclose = ws.onerror = ws.onmessage = null; try { ws.close(); } catch (e) {} ws = null; }
    if (es) { es.close(); es = null; }
  }
  function streamUrl(proto) {
    var q = '/stream?sessionId=' + encodeURIComponent(sid), c = cursor();
    if (c) q += '&after=' + encodeURIComponent(c);
    if (!proto) return base + q;
    var u = new URL(base + q, location.href); u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  }
  function ladder() { stop(); lastLadder = Date.now(); fails = 0; tryWs(); }
  function tryWs() {
    var opened = false, t0 = Date.now(), s;
    try { s = ws = new WebSocket(streamUrl(true)); } catch (e) { return trySse(); }
    var timer = setTimeout(function () { if (!opened) { s.onclose = null; s.close(); trySse(); } }, 5000);
    s.onopen = function () { opened = true; clearTimeout(timer); fails = 0; setMode('ws'); };
    s.onmessage = function (e) { onFrame(e.data); };
    s.onclose = function () {
      clearTimeout(timer); ws = null;
      if (!opened || Date.now() - t0 < 2000) return trySse();
      if (++fails > 5) return trySse();
      retry(tryWs);
    };
  }
  function trySse() {
    stop();
    if (!w.EventSource) return poll();
    var opened = false, s;
    try { s = es = new EventSource(streamUrl(false)); } catch (e) { return poll(); }
    var timer = setTimeout(function () { if (!opened) { s.close(); poll(); } }, 15000);
    s.onopen = function () { opened = true; clearTimeout(timer); fails = 0; setMode('sse'); };
    s.onmessage = function (e) { onFrame(e.data); };
    s.onerror = function () {
      clearTimeout(timer); s.close(); es = null;
      if (!opened) return poll();
      if (++fails > 3) return poll();
      retry(trySse);
    };
  }
  function retry(fn) {
    var n = gen, go = function () { if (n === gen) fn(); };
    retryT = setTimeout(function () { catchUp().then(go, go); }, Math.min(1000 * Math.pow(2, fails - 1), 30000));
  }
  function poll() {
    stop(); setMode('poll');
    var n = gen, tick = function () {
      catchUp().then(function () { if (n === gen) { fails = 0; pollT = setTimeout(tick, d.hidden ? 10000 : 2000); } },
        function () { if (n === gen) { fails++; pollT = setTimeout(tick, Math.min(2000 * Math.pow(2, fails - 1), 30000)); } });
    };
    pollT = setTimeout(tick, 500);
  }
  function catchUp() {
    if (!sid) return Promise.resolve();
    var c = cursor();
    return api('GET', '/messages?sessionId=' + encodeURIComponent(sid) + (c ? '&after=' + encodeURIComponent(c) : '')).then(function (r) {
      (r.messages || []).forEach(function (m) { upsert(m, true); });
    });
  }
  function wake(net) {
    if (!sid) return;
    catchUp().then(null, function () {});
    if (mode !== 'poll' && (ws || es)) return;
    // A dead or degraded channel starts again from the WebSocket: at once when the network is
    // back, else at most every 10 s; until then polling resumes without its backoff.
    var wait = net ? 0 : lastLadder + 10000 - Date.now();
    if (wait <= 0) return ladder();
    if (mode === 'poll') poll();
    clearTimeout(retryT); retryT = setTimeout(ladder, wait);
  }

  /* ---- connect ---- */
  function connect() {
    if (!vid) { vid = Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 11); store(VKEY, vid); }
    var nav = w.navigator, meta = {
      url: location.href, userAgent: nav.userAgent, language: nav.language,
      timezone: (Intl.DateTimeFormat().resolvedOptions() || {}).timeZone,
      screenResolution: screen.width + 'x' + screen.height
    };
    if (d.referrer) meta.referrer = d.referrer;
    if (d.title) meta.pageTitle = d.title;
    return api('POST', '/connect', { visitorId: vid, sessionId: load(SKEY) || null, metadata: meta }).then(function (r) {
      sid = r.sessionId; store(SKEY, sid); note('');
      ['operatorName', 'primaryColor', 'welcomeMessage'].forEach(function (k) { if (r[k] && !cfg.set[k]) cfg[k] = r[k]; });
      brand();
      (r.messages || []).forEach(function (m) { upsert(m, false); });
      presence(!!r.operatorOnline, r.operatorReachable !== false);
      ui.input.disabled = ui.sendBtn.disabled = false;
      emit('connect', sid);
      ladder();
    }, function (e) { note('Chat is unavailable right now.'); setTimeout(connect, 10000); console.error(e); });
  }

  /* ---- UI ---- */
  var CSS = ':host{all:initial;font:14px/1.4 system-ui,sans-serif;color:#111}*{box-sizing:border-box}' +
    '.pp-l{position:fixed;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;background:var(--c);color:#fff;cursor:pointer;box-shadow:0 4px 14px #0004;z-index:2147483000}' +
    '.pp-l svg{width:26px;height:26px;fill:currentColor}.pp-b{position:absolute;top:-4px;right:-4px;min-width:20px;padding:2px 5px;border-radius:10px;background:#e11d48;color:#fff;font-size:12px}' +
    '.pp-dot{position:absolute;bottom:2px;right:2px;width:12px;height:12px;border-radius:50%;background:#22c55e;border:2px solid #fff}' +
    '.pp-w{position:fixed;bottom:88px;width:360px;max-width:calc(100vw - 32px);height:520px;max-height:calc(100vh - 110px);display:flex;flex-direction:column;background:#fff;border-radius:14px;box-shadow:0 8px 30px #0005;overflow:hidden;z-index:2147483000}' +
    '.R{right:20px}.L{left:20px}header{background:var(--c);color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}header div{flex:1}' +
    'h2{font-size:16px;margin:0}header p{margin:0;font-size:12px;opacity:.9}button{font:inherit}.pp-x{background:none;border:0;color:#fff;font-size:22px;cursor:pointer;line-height:1}' +
    'ol{list-style:none;margin:0;padding:12px;flex:1;overflow-y:auto;background:#f5f6f8}.pp-m{max-width:80%;margin:6px 0;padding:8px 11px;border-radius:12px;background:#fff;white-space:pre-wrap;overflow-wrap:anywhere;box-shadow:0 1px 2px #0002}' +
    '.pp-me{margin-left:auto;background:var(--c);color:#fff}.pp-m small{display:block;font-size:11px;opacity:.75;margin-top:2px}.pp-m a{display:block;color:inherit}.pp-del .pp-t{font-style:italic;opacity:.7}' +
    '.pp-n,.pp-ty{font-size:12px;color:#555;padding:4px 14px;background:#f5f6f8}form{display:flex;gap:6px;padding:10px;border-top:1px solid #e5e7eb}' +
    'textarea{flex:1;resize:none;font:inherit;padding:8px;border:1px solid #cbd0d8;border-radius:8px;height:40px}.pp-s{border:0;border-radius:8px;background:var(--c);color:#fff;padding:0 14px;cursor:pointer}' +
    ':focus-visible{outline:3px solid #f59e0b;outline-offset:2px}.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}[hidden]{display:none!important}' +
    '@media (max-width:480px){.pp-w{inset:0;width:100%;max-width:none;height:100%;max-height:none;border-radius:0}}';
  function build() {
    var host = el('div', { id: 'pocketping-root' });
    d.body.appendChild(host);
    root = host.attachShadow ? host.attachShadow({ mode: 'open' }) : host;
    var side = cfg.position === 'bottom-left' ? 'L' : 'R';
    root.appendChild(el('style', null, CSS));
    ui.launcher = root.appendChild(el('button', { type: 'button', 'class': 'pp-l ' + side, 'aria-expanded': 'false', 'aria-controls': 'pp-w' }));
    ui.launcher.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-5 4V5a2 2 0 0 1 1-2z"/></svg>';
    ui.badge = ui.launcher.appendChild(el('span', { 'class': 'pp-b', 'aria-hidden': 'true', hidden: '' }));
    ui.dot = ui.launcher.appendChild(el('span', { 'class': 'pp-dot', hidden: '' }));
    ui.win = root.appendChild(el('section', { id: 'pp-w', 'class': 'pp-w ' + side, role: 'dialog', 'aria-labelledby': 'pp-h', hidden: '' }));
    var head = ui.win.appendChild(el('header'));
    var hd = head.appendChild(el('div'));
    ui.title = hd.appendChild(el('h2', { id: 'pp-h' }));
    ui.status = hd.appendChild(el('p'));
    ui.x = head.appendChild(el('button', { type: 'button', 'class': 'pp-x', 'aria-label': 'Close chat' }, '×'));
    ui.list = ui.win.appendChild(el('ol', { role: 'log', 'aria-live': 'polite', 'aria-label': 'Messages' }));
    ui.welcome = ui.list.appendChild(el('li', { 'class': 'pp-m pp-op' }));
    ui.typing = ui.win.appendChild(el('div', { 'class': 'pp-ty', 'aria-live': 'polite', hidden: '' }));
    ui.note = ui.win.appendChild(el('div', { 'class': 'pp-n', role: 'status', hidden: '' }));
    var form = ui.win.appendChild(el('form'));
    form.appendChild(el('label', { 'for': 'pp-i', 'class': 'sr' }, 'Your message'));
    ui.input = form.appendChild(el('textarea', { id: 'pp-i', rows: '1', placeholder: cfg.placeholder, disabled: '' }));
    ui.sendBtn = form.appendChild(el('button', { type: 'submit', 'class': 'pp-s', 'aria-label': 'Send message', disabled: '' }, 'Send'));
    ui.launcher.onclick = toggle; ui.x.onclick = close;
    form.onsubmit = function (e) { e.preventDefault(); var v = ui.input.value; typingAt = 0; ui.input.value = ''; send(v).then(null, function () {}); ui.input.focus(); };
    ui.input.onkeydown = function (e) { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit ? form.requestSubmit() : form.onsubmit(e); } };
    ui.input.oninput = function () {
      if (sid && Date.now() - typingAt > 2000) { typingAt = Date.now(); api('POST', '/typing', { sessionId: sid, sender: 'visitor', isTyping: true }).then(null, function () {}); }
    };
    ui.win.onkeydown = function (e) { if (e.key === 'Escape') close(); };
    order.forEach(function (id) { ui.list.appendChild(msgs[id].el); });
    brand(); badge();
  }
  function brand() {
    if (!ui.win) return;
    root.host ? root.host.style.setProperty('--c', cfg.primaryColor) : ui.win.style.setProperty('--c', cfg.primaryColor);
    ui.title.textContent = cfg.title || cfg.operatorName;
    ui.welcome.textContent = cfg.welcomeMessage || '';
    ui.welcome.hidden = !cfg.welcomeMessage || order.length > 0;
  }
  function presence(on, reachable) {
    online = on; if (!ui.win) return;
    ui.status.textContent = on ? 'Active now' : reachable === false ? 'Leave a message' : 'Replies in a few minutes';
    ui.dot.hidden = !on; badge();
  }
  function showTyping(on) { if (ui.typing) { ui.typing.hidden = !on; ui.typing.textContent = on ? cfg.operatorName + ' is typing…' : ''; } }
  function note(text) { if (ui.note) { ui.note.textContent = text; ui.note.hidden = !text; } }
  function badge() {
    if (!ui.launcher) return;
    var n = isOpen ? 0 : unread();
    ui.badge.hidden = !n; ui.badge.textContent = n > 9 ? '9+' : String(n);
    ui.launcher.setAttribute('aria-label', (isOpen ? 'Close chat with ' : 'Open chat with ') + cfg.operatorName +
      (n ? ', ' + n + ' unread message' + (n > 1 ? 's' : '') : '') + (online ? ' (online)' : ''));
  }
  function scheduleRead() {
    if (!isOpen || !sid || readT || d.hidden) return;
    readT = setTimeout(function () { readT = null; if (isOpen && !d.hidden) flushRead(); }, 500);
  }
  function flushRead() {
    var ids = order.filter(function (id) { var m = msgs[id].m; return !mine(m) && m.status !== 'read' && id.indexOf('temp-') !== 0; });
    if (ids.length) api('POST', '/read', { sessionId: sid, messageIds: ids, status: 'read' }).then(function () {
      ids.forEach(function (id) { if (msgs[id]) msgs[id].m.status = 'read'; }); badge();
    }, function () {});
  }
  function open() {
    if (!ui.win || isOpen) return;
    isOpen = true; ui.win.hidden = false; ui.launcher.setAttribute('aria-expanded', 'true'); store(OKEY, '1');
    ui.list.scrollTop = ui.list.scrollHeight; ui.input.focus(); badge(); scheduleRead(); emit('open');
  }
  function close() {
    if (!ui.win || !isOpen) return;
    if (readT) { clearTimeout(readT); readT = null; flushRead(); } // what was on screen has been seen
    isOpen = false; ui.win.hidden = true; ui.launcher.setAttribute('aria-expanded', 'false'); store(OKEY, null);
    ui.launcher.focus(); badge(); emit('close');
  }
  function toggle() { isOpen ? close() : open(); }

  /* ---- public API ---- */
  function on(name, fn) { (handlers[name] = handlers[name] || []).push(fn); return function () { off(name, fn); }; }
  function off(name, fn) { var l = handlers[name] || []; var i = l.indexOf(fn); if (i >= 0) l.splice(i, 1); }
  function trigger(name, data) {
    if (!ws || ws.readyState !== 1) { console.warn('PocketPing: events need the WebSocket channel'); return false; }
    var ev = { name: String(name), timestamp: new Date().toISOString() };
    if (data) ev.data = data;
    ws.send(JSON.stringify({ type: 'event', data: ev }));
    return true;
  }
  function init(options) {
    if (started) { console.warn('PocketPing already initialised'); return w.PocketPing; }
    options = options || {};
    if (!options.endpoint) throw new Error('PocketPing: endpoint is required');
    started = true;
    cfg = { operatorName: 'Support', primaryColor: '#4f46e5', placeholder: 'Type a message…', position: 'bottom-right', set: {} };
    for (var k in options) if (options[k] != null && options[k] !== '') { cfg[k] = options[k]; cfg.set[k] = 1; }
    cfg.autoOpen = cfg.autoOpen === true || cfg.autoOpen === 'true';
    base = String(cfg.endpoint).replace(/\/+$/, '');
    vid = load(VKEY);
    [['onMessage', 'message'], ['onEvent', 'event'], ['onConnect', 'connect'], ['onOpen', 'open'], ['onClose', 'close']].forEach(function (p) {
      if (typeof cfg[p[0]] === 'function') on(p[1], cfg[p[0]]);
    });
    var go = function () { build(); connect(); if (load(OKEY)) open(); };
    d.body ? go() : d.addEventListener('DOMContentLoaded', go);
    d.addEventListener('visibilitychange', function () { if (!d.hidden) { wake(); scheduleRead(); } });
    w.addEventListener('online', function () { wake(1); });
    w.addEventListener('pageshow', function (e) { if (e.persisted) wake(); });
    return w.PocketPing;
  }
  w.PocketPing = {
    kind: 'pocketping-py', init: init, on: on, off: off, trigger: trigger, send: send, open: open, close: close, toggle: toggle,
    get sessionId() { return sid; }, get transport() { return mode; }, get unread() { return unread(); }
  };
  var s = d.currentScript;
  if (s && s.getAttribute('data-endpoint')) {
    var a = function (n) { return s.getAttribute('data-' + n); };
    init({
      endpoint: a('endpoint'), title: a('title'), operatorName: a('operator-name'), primaryColor: a('primary-color'),
      position: a('position'), welcomeMessage: a('welcome-message') || a('welcome'), placeholder: a('placeholder'), autoOpen: a('auto-open')
    });
  }
})(window, document);
