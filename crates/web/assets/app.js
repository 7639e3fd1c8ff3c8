// jaring chat in a browser. Plain JavaScript, no build step. It speaks docs/chat-protocol.md over a
// WebSocket: one text message out is one command line, one message in is one reply (in request
// order) or one event (it has an "event" key). Every name and text is put in the page as text
// (textContent), never as HTML.
'use strict';

const HISTORY_PAGE = 50; // messages per history request
const ACK_EVERY_MS = 200; // how often what was received is acknowledged
const MAX_CURSORS = 256; // cursors the server takes in one line
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 15000;
const TOKEN_GONE = 'unknown or expired token';
const WATCH_MOVED = 'watching moved to another connection';

const $ = (id) => document.getElementById(id);

// Makes an element; `text` goes in as text, never parsed as HTML.
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

const S = {
  realm: '', user: '', password: null, token: null,
  ws: null, pending: [], online: false, attempt: 0, retryTimer: null, lastSend: 0,
  idleMs: 300000, // from the watch reply
  cursors: { priv: 0, groups: {} }, // what this page holds: it resumes from here
  acked: '', // the cursor words last acknowledged
  convs: new Map(), // key ('u:addr' or 'g:name') -> conversation
  active: null,
  loggingIn: false, watchMoved: false,
};

// ---- The connection -------------------------------------------------------------------------

function wsUrl(realm) {
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  return scheme + location.host + '/ws/' + encodeURIComponent(realm);
}

// Sends one command line; resolves with its reply (OK or ERROR), rejects if the connection ends.
function call(line) {
  return new Promise((resolve, reject) => {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) { reject(new Error('not connected')); return; }
    S.pending.push({ resolve, reject });
    S.lastSend = Date.now();
    ws.send(line.replace(/[\r\n]+/g, ' '));
  });
}

async function ok(line) {
  const r = await call(line);
  if (r.status !== 'OK') throw new Error(r.message || 'the server refused it');
  return r;
}

// Opens a socket; `onOpen` runs once it is open. Every drop ends in reconnect() unless logged out.
function openSocket(onOpen) {
  clearTimeout(S.retryTimer);
  const ws = new WebSocket(wsUrl(S.realm));
  S.ws = ws;
  ws.onopen = () => { if (S.ws === ws) onOpen(); };
  ws.onmessage = (e) => { if (S.ws === ws) onFrame(e.data); };
  ws.onclose = () => {
    if (S.ws !== ws) return;
    S.ws = null;
    S.online = false;
    const failed = S.pending.splice(0);
    for (const p of failed) p.reject(new Error('connection lost'));
    if (S.token || S.loggingIn) scheduleReconnect();
  };
}

function onFrame(data) {
  let v;
  try { v = JSON.parse(data); } catch (e) { return; }
  if (v && typeof v.event === 'string') { onEvent(v); return; }
  const p = S.pending.shift();
  if (p) p.resolve(v);
}

function scheduleReconnect() {
  if (S.loggingIn && !S.token) { // the first login never got through
    S.loggingIn = false;
    loginError('cannot reach the server; is it running?');
    return;
  }
  S.attempt += 1;
  // Exponential backoff with jitter, so many pages do not all come back at once.
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (S.attempt - 1));
  const delay = cap / 2 + Math.random() * cap / 2;
  setStatus('reconnecting', 'reconnecting… (' + (delay / 1000).toFixed(1) + ' s)');
  S.retryTimer = setTimeout(() => openSocket(resume), delay);
}

// On a new connection: watch with the token and the cursors held, logging in again with the
// password held in memory if the token is gone.
async function resume() {
  setStatus('connecting', 'connecting…');
  try {
    let r = await watch();
    if (r.status !== 'OK' && (r.message || '').includes(TOKEN_GONE)) {
      if (!S.password) { logoutLocal('Your session ended; log in again.'); return; }
      const a = await call('auth ' + S.user + ' ' + S.password);
      if (a.status !== 'OK') { logoutLocal(a.message); return; }
      setToken(a.tokenid);
      hintUnread(a);
      r = await watch();
    }
    if (r.status !== 'OK') throw new Error(r.message);
    watching(r);
  } catch (e) {
    if (S.ws) S.ws.close(); // retried with backoff
  }
}

function cursorWords() {
  const w = [];
  if (S.cursors.priv > 0) w.push(String(S.cursors.priv));
  for (const [g, seq] of Object.entries(S.cursors.groups)) if (seq > 0) w.push(g + ':' + seq);
  return w;
}

// `watch TOKEN CURSOR…`: the stream resumes right after what the page holds.
async function watch() {
  const words = cursorWords();
  let line = 'watch ' + S.token;
  if (words.length <= MAX_CURSORS) {
    line += words.length ? ' ' + words.join(' ') : '';
  } else { // too many for one line: acknowledge them all first, then watch from the server's
    for (let i = 0; i < words.length; i += MAX_CURSORS) {
      await ok('ack ' + S.token + ' ' + words.slice(i, i + MAX_CURSORS).join(' '));
    }
  }
  const r = await call(line);
  if (r.status === 'OK') S.acked = words.join(' ');
  return r;
}

function watching(r) {
  S.online = true;
  S.attempt = 0;
  S.watchMoved = false;
  if (r.idle_timeout > 0) S.idleMs = r.idle_timeout * 1000;
  setStatus('online', 'connected');
  refreshGroups();
  if (S.active) loadHistory(S.active, false);
}

// Acknowledges what arrived since the last ack; pings while idle so the realm keeps the socket.
setInterval(() => {
  if (!S.online || !S.token) return;
  const words = cursorWords();
  const now = words.join(' ');
  if (now !== S.acked) {
    S.acked = now;
    for (let i = 0; i < words.length; i += MAX_CURSORS) {
      call('ack ' + S.token + ' ' + words.slice(i, i + MAX_CURSORS).join(' ')).catch(() => {});
    }
  } else if (Date.now() - S.lastSend > S.idleMs / 3) {
    call('ping ' + S.token).catch(() => {});
  }
}, ACK_EVERY_MS);

// ---- Events ---------------------------------------------------------------------------------

function onEvent(v) {
  switch (v.event) {
    case 'private': {
      const peer = v.from === S.user ? v.to : v.from;
      addMessages(conv('u:' + peer), [v], true);
      if (v.seq > S.cursors.priv) S.cursors.priv = v.seq;
      break;
    }
    case 'message': {
      addMessages(conv('g:' + v.group), [v], true);
      const held = S.cursors.groups[v.group] || 0;
      if (v.seq > held) S.cursors.groups[v.group] = v.seq;
      break;
    }
    case 'watch_end':
      S.online = false;
      if (v.reason === WATCH_MOVED) {
        S.watchMoved = true;
        setStatus('away', 'watching in another window', true);
      } else { // any other reason: watch again from the cursors held
        setStatus('reconnecting', 'resuming…');
        setTimeout(() => { if (S.ws && !S.watchMoved) resume(); }, 1000);
      }
      break;
    case 'closing': setStatus('reconnecting', 'the server is closing the connection'); break;
    default: break; // join, leave, end: live-session chatter
  }
}

// ---- Conversations --------------------------------------------------------------------------

function conv(key) {
  let c = S.convs.get(key);
  if (!c) {
    const group = key.startsWith('g:');
    c = { key, group, name: key.slice(2), msgs: [], ids: new Set(), seqs: new Set(),
      unseen: 0, hint: 0, loaded: false, older: true, loading: false };
    S.convs.set(key, c);
    scheduleRender();
  }
  return c;
}

// Merges messages into a conversation: one entry per id and per seq (the second line of defence
// against a repeat), kept in seq order.
function addMessages(c, list, live) {
  let added = 0;
  for (const m of list) {
    if (m.seq && c.seqs.has(m.seq)) continue;
    if (m.id && c.ids.has(m.id)) {
      if (m.seq) { // our own send, now numbered: place it
        const mine = c.msgs.find((x) => x.id === m.id);
        if (mine && !mine.seq) { mine.seq = m.seq; mine.order = m.seq; mine.sent_at = m.sent_at; c.seqs.add(m.seq); }
        c.msgs.sort(bySeq);
      }
      continue;
    }
    if (m.id) c.ids.add(m.id);
    if (m.seq) c.seqs.add(m.seq);
    // An own private send has no seq yet: it goes after everything held when it was sent.
    m.order = m.seq || lastOrder(c) + 0.001;
    c.msgs.push(m);
    added += 1;
    if (live && S.active !== c.key && m.from !== S.user) c.unseen += 1;
  }
  if (added) {
    c.msgs.sort(bySeq);
    scheduleRender();
  }
}

function bySeq(a, b) {
  return a.order - b.order;
}

function lastOrder(c) {
  return c.msgs.length ? c.msgs[c.msgs.length - 1].order : 0;
}

// The unread counts of the auth reply, shown until the pushed messages catch up with them (a
// conversation already holding messages counts what arrives instead: no stale count after a
// login again).
function hintUnread(a) {
  const hint = (key, n) => { const c = conv(key); if (!c.msgs.length) c.hint = n; };
  for (const [peer, n] of Object.entries(a.unread || {})) hint('u:' + peer, n);
  for (const [g, n] of Object.entries(a.unread_groups || {})) hint('g:' + g, n);
  scheduleRender();
}

async function refreshGroups() {
  try {
    const r = await ok('groups ' + S.token);
    for (const g of r.groups || []) if (g.member) conv('g:' + g.name);
  } catch (e) { /* shown again on the next connection */ }
}

function openConv(key) {
  const c = conv(key);
  S.active = key;
  c.unseen = 0;
  c.hint = 0;
  $('compose-text').value = '';
  render(true);
  if (!c.loaded) loadHistory(key, false);
  $('compose-text').focus();
}

// Loads the newest page of history, or (older) the page before the oldest message held.
async function loadHistory(key, older) {
  const c = conv(key);
  if (c.loading || (older && !c.older) || !S.online) return;
  c.loading = true;
  let line = 'history ' + S.token + ' ' + c.name + ' ' + HISTORY_PAGE;
  if (older) {
    const oldest = c.msgs.find((m) => m.seq);
    if (!oldest) { c.loading = false; return; }
    line += ' ' + oldest.seq;
  }
  const log = $('log');
  const fromBottom = log.scrollHeight - log.scrollTop;
  try {
    const r = await ok(line);
    const list = r.messages || [];
    if (older || !c.loaded) c.older = list.length >= HISTORY_PAGE || r.more === true;
    c.loaded = true;
    addMessages(c, list, false);
    render(false);
    if (older && S.active === key) log.scrollTop = log.scrollHeight - fromBottom;
  } catch (e) {
    if (S.online) showError(e.message);
  } finally {
    c.loading = false;
    if (S.active === key) renderTop(c);
  }
}

async function sendText(text) {
  const c = S.convs.get(S.active);
  if (!c || !text.trim()) return;
  const line = text.replace(/[\r\n]+/g, ' ');
  try {
    if (c.group) {
      const r = await ok('sendgroup ' + S.token + ' ' + c.name + ' ' + line);
      // The same message also comes back pushed; its id and seq keep it once.
      addMessages(c, [{ id: r.id, seq: r.seq || undefined, from: S.user, msg: line,
        sent_at: Date.now(), group: c.name }], false);
    } else {
      const r = await ok('send ' + S.token + ' ' + c.name + ' ' + line);
      addMessages(c, [{ id: r.id, from: S.user, to: c.name, msg: line, sent_at: Date.now() }], false);
    }
    $('compose-text').value = '';
  } catch (e) {
    showError(S.online ? e.message : 'not sent: the connection is down; it comes back by itself');
  }
}

// Joins a group as jaring's terminal client does: `group` then `exit` right behind it (the
// membership stays, the live session ends); its messages then come by the watch.
async function joinGroup(name) {
  try {
    const join = call('group ' + S.token + ' ' + name);
    const exit = call('exit');
    const r = await join;
    await exit;
    if (r.status !== 'OK') throw new Error(r.message);
    openConv('g:' + (r.group || name));
  } catch (e) { showError(e.message); }
}

async function showPanel(title, line, item) {
  try {
    const r = await ok(line);
    $('panel-title').textContent = title;
    const list = $('panel-list');
    list.replaceChildren(...item(r));
    $('panel').hidden = false;
  } catch (e) { showError(e.message); }
}

function personItem(name, detail, live) {
  const li = el('li', 'person');
  li.append(el('span', live ? 'dot on' : 'dot'), el('span', 'pname', name));
  if (detail) li.append(el('span', 'pdetail', detail));
  if (name !== S.user) {
    li.classList.add('clickable');
    li.title = 'Message ' + name;
    li.addEventListener('click', () => { $('panel').hidden = true; openConv('u:' + name); });
  }
  return li;
}

// ---- Rendering ------------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => { renderQueued = false; render(false); }, 16);
}

function render(switched) {
  renderConvs();
  const c = S.active && S.convs.get(S.active);
  $('empty').hidden = !!c;
  $('conv').hidden = !c;
  if (!c) return;
  $('conv-title').textContent = c.group ? '# ' + c.name : c.name;
  $('conv-kind').textContent = c.group ? 'group' : 'private';
  $('show-members').hidden = !c.group;
  renderLog(c, switched);
}

function renderConvs() {
  const list = $('convs');
  const items = [...S.convs.values()].sort((a, b) => lastAt(b) - lastAt(a) || a.key.localeCompare(b.key));
  $('convs-empty').hidden = items.length > 0;
  list.replaceChildren(...items.map((c) => {
    const li = el('li', 'conv-item' + (c.key === S.active ? ' active' : ''));
    li.dataset.key = c.key;
    li.append(el('span', 'icon', c.group ? '#' : '@'), el('span', 'cname', c.name));
    const last = c.msgs[c.msgs.length - 1];
    if (last) li.append(el('span', 'preview', last.msg));
    const n = c.key === S.active ? 0 : Math.max(c.unseen, c.hint);
    if (n > 0) li.append(el('span', 'badge', n > 999 ? '999+' : n));
    li.addEventListener('click', () => openConv(c.key));
    return li;
  }));
}

function lastAt(c) {
  const last = c.msgs[c.msgs.length - 1];
  return last ? last.sent_at || 0 : 0;
}

function renderTop(c) {
  $('log-top').textContent = c.loading ? 'loading…'
    : c.older ? 'scroll up for older messages' : 'the beginning of this conversation';
}

// Puts every message node of `c` in the list, in order, reusing the nodes already made.
function renderLog(c, switched) {
  const log = $('log');
  const list = $('msgs');
  const atBottom = switched || log.scrollHeight - log.scrollTop - log.clientHeight < 60;
  if (list.dataset.key !== c.key) { list.replaceChildren(); list.dataset.key = c.key; }
  let at = list.firstChild;
  for (const m of c.msgs) {
    if (!m.node) m.node = messageNode(m);
    if (m.seq && m.node.dataset.seq !== String(m.seq)) m.node.dataset.seq = String(m.seq);
    if (at === m.node) at = at.nextSibling;
    else list.insertBefore(m.node, at);
  }
  while (at) { const next = at.nextSibling; at.remove(); at = next; }
  renderTop(c);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function messageNode(m) {
  const mine = m.from === S.user;
  const li = el('li', 'msg' + (mine ? ' mine' : ''));
  if (m.seq) li.dataset.seq = String(m.seq);
  const meta = el('div', 'meta');
  meta.append(el('span', 'from', mine ? 'you' : m.from));
  if (m.msg_from && !mine && m.msg_from !== m.from) meta.append(el('span', 'display', m.msg_from));
  const t = el('time', 'at', when(m.sent_at));
  if (m.sent_at) { t.dateTime = new Date(m.sent_at).toISOString(); t.title = new Date(m.sent_at).toLocaleString(); }
  meta.append(t);
  li.append(meta, el('div', 'text', m.msg));
  return li;
}

function when(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === new Date().toDateString()) return time;
  return d.toLocaleDateString([], { day: 'numeric', month: 'short' }) + ' ' + time;
}

function setStatus(state, text, sticky) {
  const s = $('status');
  s.dataset.state = state;
  s.textContent = text;
  s.title = sticky ? 'another window of yours now gets your messages; log in again here to take them back' : '';
}

let errorTimer = null;
function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { e.hidden = true; }, 6000);
}

function loginError(text) {
  const e = $('login-error');
  e.textContent = text;
  e.hidden = !text;
  $('login-button').disabled = false;
}

// ---- Logging in and out ---------------------------------------------------------------------

function setToken(token) {
  S.token = token;
  sessionStorage.setItem('jaring.token', token);
}

function showChat() {
  $('login').hidden = true;
  $('chat').hidden = false;
  $('me').textContent = S.user + '@' + S.realm;
  render(false);
}

function login(realm, user, password) {
  S.realm = realm;
  S.user = user;
  S.loggingIn = true;
  sessionStorage.setItem('jaring.realm', realm);
  $('login-button').disabled = true;
  openSocket(async () => {
    if (S.token) { resume(); return; } // a reconnect during the first login
    try {
      const a = await call('auth ' + user + ' ' + password);
      if (a.status !== 'OK') {
        S.loggingIn = false;
        S.ws.close();
        loginError(a.message);
        return;
      }
      S.loggingIn = false;
      S.password = password; // in memory only: to log in again if the token is refused
      sessionStorage.setItem('jaring.user', user);
      setToken(a.tokenid);
      hintUnread(a);
      showChat();
      loginError('');
      const r = await watch();
      if (r.status !== 'OK') throw new Error(r.message);
      watching(r);
    } catch (e) {
      if (S.ws) S.ws.close();
    }
  });
}

function logoutLocal(why) {
  const ws = S.ws;
  S.token = null;
  S.password = null;
  S.ws = null;
  S.online = false;
  S.convs.clear();
  S.active = null;
  S.cursors = { priv: 0, groups: {} };
  clearTimeout(S.retryTimer);
  sessionStorage.removeItem('jaring.token');
  if (ws) ws.close();
  $('msgs').replaceChildren();
  $('msgs').dataset.key = '';
  $('chat').hidden = true;
  $('panel').hidden = true;
  $('login').hidden = false;
  loginError(why || '');
}

async function loadRealms() {
  const select = $('login-realm');
  let realms = [];
  try {
    const r = await fetch('/realms', { cache: 'no-store' });
    realms = (await r.json()).realms || [];
  } catch (e) {
    loginError('cannot list the realms; is the server running?');
  }
  const saved = sessionStorage.getItem('jaring.realm');
  select.replaceChildren(...realms.map((name) => el('option', '', name)));
  if (realms.includes(saved)) select.value = saved;
  select.parentElement.hidden = realms.length < 2;
  return realms;
}

function wire() {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    loginError('');
    const user = $('login-user').value.trim();
    const password = $('login-password').value;
    if (/\s/.test(user) || /\s/.test(password)) { loginError('user names and passwords hold no spaces'); return; }
    login($('login-realm').value, user, password);
  });
  $('logout').addEventListener('click', () => {
    if (S.online) call('logout ' + S.token).catch(() => {});
    setTimeout(() => logoutLocal(''), 100);
  });
  $('open-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const to = $('open-to').value.trim();
    if (!to) return;
    $('open-to').value = '';
    openConv('u:' + to);
  });
  $('join-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const g = $('join-group').value.trim();
    if (!g) return;
    $('join-group').value = '';
    joinGroup(g);
  });
  $('compose').addEventListener('submit', (e) => {
    e.preventDefault();
    sendText($('compose-text').value);
  });
  $('log').addEventListener('scroll', () => {
    if ($('log').scrollTop < 40 && S.active) loadHistory(S.active, true);
  });
  $('show-members').addEventListener('click', () => {
    const c = S.convs.get(S.active);
    if (c) showPanel('Members of ' + c.name, 'members ' + S.token + ' ' + c.name,
      (r) => (r.members || []).map((m) => personItem(m.name, m.display_name, m.live)));
  });
  $('show-people').addEventListener('click', () => showPanel('People on ' + S.realm, 'users ' + S.token,
    (r) => (r.users || []).map((u) => personItem(u.name, u.display_name, u.online))));
  $('show-realms').addEventListener('click', () => showPanel('Realms', 'realms ' + S.token, (r) => {
    const here = el('li', 'person');
    here.append(el('span', 'dot on'), el('span', 'pname', r.realm), el('span', 'pdetail', 'this realm'));
    return [here, ...(r.peers || []).map((p) => {
      const li = el('li', 'person');
      li.append(el('span', p.state === 'up' ? 'dot on' : 'dot'), el('span', 'pname', p.realm),
        el('span', 'pdetail', p.state + (p.outbox ? ', ' + p.outbox + ' waiting' : '')
          + (p.last_error ? ' (' + p.last_error + ')' : '')));
      return li;
    })];
  }));
  $('panel-close').addEventListener('click', () => { $('panel').hidden = true; });
  $('status').addEventListener('click', () => {
    if (S.watchMoved && S.ws) { S.watchMoved = false; resume(); } // take the messages back here
  });
}

async function start() {
  wire();
  const realms = await loadRealms();
  const token = sessionStorage.getItem('jaring.token');
  const user = sessionStorage.getItem('jaring.user');
  const realm = sessionStorage.getItem('jaring.realm');
  if (token && user && realms.includes(realm)) { // a reload: carry on with the same token
    S.realm = realm;
    S.user = user;
    S.token = token;
    showChat();
    openSocket(resume);
  }
}

document.addEventListener('DOMContentLoaded', start);
