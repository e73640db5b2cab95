/* PocketPing operator console. Text from visitors is only ever set with textContent. */
(function () {
  'use strict';
  var API = location.pathname.replace(/\/+$/, '') + '/api';
  var $ = function (id) { return document.getElementById(id); };
  var sessions = {}, current = null, messages = {}, typingTimer = null, typingSentAt = 0, es = null, retry = 0;

  function call(method, path, body) {
    return fetch(API + path, {
      method: method,
      headers: { 'Content-Type': 'application/json' },
      credentials: 'same-origin',
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      if (r.status === 401) { location.reload(); throw new Error('signed out'); }
      return r.json().then(function (data) {
        if (!r.ok) throw new Error((data && data.detail) || ('HTTP ' + r.status));
        return data;
      });
    });
  }
  function node(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function time(iso) {
    var d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  function who(s) {
    var id = s.identity || {};
    var name = id.name || id.email || ('Visitor ' + String(s.visitorId || s.id).slice(-6));
    // A hash proves the user id only; the name and e-mail are what the visitor's page sent.
    if (s.identity) name += s.identityVerified ? ' (user id verified; name, e-mail given)' : ' (unverified)';
    return s.banned ? name + ' (blocked)' : name;
  }
  function status(text) { $('conn').textContent = text; }

  /* ---- session list ---- */
  function loadSessions() {
    return call('GET', '/sessions').then(function (r) {
      sessions = {};
      r.sessions.forEach(function (s) { sessions[s.id] = s; });
      if (current && !sessions[current.id]) sessions[current.id] = current;
      $('online').checked = !!r.operatorOnline;
      renderList();
    }, function (e) { status('Error: ' + e.message); });
  }
  function renderList() {
    var ul = $('sessions'), list = Object.keys(sessions).map(function (k) { return sessions[k]; });
    list.sort(function (a, b) { return (b.lastActivity || '').localeCompare(a.lastActivity || ''); });
    ul.textContent = '';
    list.forEach(function (s) {
      var li = document.createElement('li'), b = node('button');
      b.type = 'button';
      b.dataset.id = s.id;
      if (current && current.id === s.id) b.setAttribute('aria-current', 'true');
      var label = 'Conversation with ' + who(s) + (s.unread ? ', ' + s.unread + ' unread' : '') + (s.status === 'closed' ? ', closed' : '');
      b.setAttribute('aria-label', label);
      if (s.unread) b.appendChild(node('span', 'unread', String(s.unread)));
      b.appendChild(node('span', 'who', who(s) + (s.status === 'closed' ? ' (closed)' : '')));
      b.appendChild(node('span', 'last', s.lastMessage ? s.lastMessage.content : 'No messages yet'));
      b.appendChild(node('span', 'where', (s.metadata && (s.metadata.pageTitle || s.metadata.url)) || ''));
      b.onclick = function () { select(s.id); };
      li.appendChild(b);
      ul.appendChild(li);
    });
    $('empty').hidden = list.length > 0;
  }

  /* ---- conversation ---- */
  function select(id) {
    return call('GET', '/sessions/' + encodeURIComponent(id)).then(function (r) {
      current = r.session;
      sessions[id] = r.session;
      messages = {};
      $('messages').textContent = '';
      $('chat-h').textContent = who(r.session);
      var m = r.session.metadata || {};
      $('chat-info').textContent = [m.url, m.language, m.timezone].filter(Boolean).join(' · ');
      $('close').hidden = r.session.status === 'closed';
      $('ban').hidden = false;
      $('ban').textContent = r.session.banned ? 'Unblock visitor' : 'Block visitor';
      $('reply').hidden = false;
      $('typing').textContent = '';
      showAI(r.ai);
      r.messages.forEach(showMessage);
      renderList();
      markRead();
      $('reply-text').focus();
    }, function (e) { status('Error: ' + e.message); });
  }
  function showAI(ai) {
    // The AI responder's state here (absent without one): who answers, and the handoff reason.
    $('ai-state').hidden = !ai;
    if (!ai) return;
    $('ai-text').textContent = ai.active ? 'The AI responder answers this conversation.' : 'AI off' + (ai.reason ? ': ' + ai.reason : '') + '.';
    $('ai-toggle').textContent = ai.active ? 'Take over' : 'Hand back to the AI';
    $('ai-toggle').dataset.active = ai.active ? '1' : '';
  }
  function showNote(text) {
    $('messages').appendChild(node('li', 'note', text));
  }
  function showMessage(m) {
    var rec = messages[m.id], ol = $('messages');
    if (!rec) {
      var li = node('li', m.sender);
      rec = messages[m.id] = { m: m, li: li, text: li.appendChild(node('span')), meta: li.appendChild(node('small')) };
      ol.appendChild(li);
    } else {
      for (var k in m) rec.m[k] = m[k];
    }
    m = rec.m;
    rec.text.textContent = m.deletedAt ? 'Message deleted' : m.content;
    rec.li.classList.toggle('deleted', !!m.deletedAt);
    var tick = m.sender === 'operator' ? ' · ' + (m.status || 'sent') : '';
    rec.meta.textContent = (m.sender === 'visitor' ? who(current) : m.sender === 'operator' ? 'You' : m.sender) + ' ' + time(m.timestamp) + (m.editedAt ? ' · edited' : '') + tick;
    ol.scrollTop = ol.scrollHeight;
  }
  function markRead() {
    if (!current || document.hidden) return;
    var ids = Object.keys(messages).filter(function (id) {
      var m = messages[id].m;
      return m.sender === 'visitor' && m.status !== 'read';
    });
    if (!ids.length) return;
    call('POST', '/sessions/' + encodeURIComponent(current.id) + '/read', { messageIds: ids }).then(function () {
      ids.forEach(function (id) { messages[id].m.status = 'read'; });
      if (sessions[current.id]) sessions[current.id].unread = 0;
      renderList();
    }, function () {});
  }

  /* ---- live updates: SSE of every session's events ---- */
  function listen() {
    es = new EventSource(API + '/stream');
    es.onopen = function () { retry = 0; status('Live'); loadSessions(); if (current) select(current.id); };
    es.onmessage = function (e) {
      var f; try { f = JSON.parse(e.data); } catch (err) { return; }
      onFrame(f.type, f.data || {});
    };
    es.onerror = function () {
      es.close();
      status('Reconnecting…');
      setTimeout(listen, Math.min(1000 * Math.pow(2, retry++), 15000));
    };
  }
  function onFrame(type, d) {
    var sid = d.sessionId, s = sessions[sid], here = current && current.id === sid;
    if (type === 'message') {
      if (here) {
        showMessage(d);
        if (d.sender === 'visitor') { $('typing').textContent = ''; markRead(); }
      }
      if (!s) return loadSessions();
      s.lastMessage = { content: d.content, sender: d.sender, timestamp: d.timestamp };
      s.lastActivity = d.timestamp;
      if (d.sender === 'visitor' && !here && d.status !== 'read') s.unread = (s.unread || 0) + 1;
      if (s.status === 'closed' && d.sender === 'visitor') s.status = 'active';
      renderList();
    } else if (type === 'note' && here) {
      showNote(d.text);
      showAI({ active: false, reason: d.text.replace(/^AI handed over: /, '') });
    } else if (type === 'typing' && d.sender === 'visitor' && here) {
      $('typing').textContent = d.isTyping ? who(current) + ' is typing…' : '';
      clearTimeout(typingTimer);
      typingTimer = setTimeout(function () { $('typing').textContent = ''; }, 6000);
    } else if (type === 'read' && here) {
      (d.messageIds || []).forEach(function (id) { if (messages[id]) showMessage({ id: id, status: d.status }); });
    } else if ((type === 'message_edited' || type === 'message_deleted') && here && messages[d.messageId]) {
      showMessage(type === 'message_edited' ? { id: d.messageId, content: d.content, editedAt: d.editedAt } : { id: d.messageId, deletedAt: d.deletedAt || 'now' });
    } else if (type === 'event' && d.name === 'session_closed') {
      if (s) { s.status = 'closed'; renderList(); }
      if (here) { current.status = 'closed'; $('close').hidden = true; }
    } else if (type === 'presence') {
      $('online').checked = !!d.online;
    }
  }

  /* ---- operator actions ---- */
  $('reply').onsubmit = function (e) {
    e.preventDefault();
    var box = $('reply-text'), text = box.value;
    if (!current || !text.trim()) return;
    box.value = '';
    call('POST', '/sessions/' + encodeURIComponent(current.id) + '/messages', { content: text }).then(function (r) {
      showMessage(r.message);
    }, function (err) { box.value = text; status('Not sent: ' + err.message); });
  };
  $('reply-text').onkeydown = function (e) {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('reply').requestSubmit(); }
  };
  $('reply-text').oninput = function () {
    if (!current || Date.now() - typingSentAt < 2000) return;
    typingSentAt = Date.now();
    call('POST', '/sessions/' + encodeURIComponent(current.id) + '/typing', { isTyping: true }).then(null, function () {});
  };
  $('close').onclick = function () {
    if (!current) return;
    call('POST', '/sessions/' + encodeURIComponent(current.id) + '/close').then(function (r) {
      current.status = r.session.status;
      sessions[current.id].status = 'closed';
      $('close').hidden = true;
      renderList();
    }, function (err) { status('Error: ' + err.message); });
  };
  $('ban').onclick = function () {
    if (!current) return;
    var banned = !sessions[current.id].banned;
    call('POST', '/sessions/' + encodeURIComponent(current.id) + '/ban', { banned: banned }).then(function (r) {
      current = sessions[current.id] = r.session;
      $('ban').textContent = r.session.banned ? 'Unblock visitor' : 'Block visitor';
      $('chat-h').textContent = who(r.session);
      renderList();
    }, function (err) { status('Error: ' + err.message); });
  };
  $('ai-toggle').onclick = function () {
    if (!current) return;
    var active = !$('ai-toggle').dataset.active;
    call('POST', '/sessions/' + encodeURIComponent(current.id) + '/ai', { active: active }).then(function () {
      showAI({ active: active, reason: active ? null : 'turned off by an operator' });
    }, function (err) { status('Error: ' + err.message); });
  };
  $('online').onchange = function () {
    call('POST', '/presence', { online: $('online').checked }).then(null, function (err) { status('Error: ' + err.message); });
  };
  document.addEventListener('visibilitychange', function () { if (!document.hidden) markRead(); });
  setInterval(loadSessions, 30000);
  call('GET', '/me').then(function (r) { $('me').textContent = r.operator.name; });
  loadSessions();
  listen();
})();
