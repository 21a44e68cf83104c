// The GridWatch console: login, review queue, map, ticket detail, supervision board,
// assessment (考核), department work queue, live updates. Plain DOM, no framework.
import { api, ApiError, allTickets, openTickets, OPEN_STATUSES, query, setCsrf } from './api.js';
import { getLang, initialLang, setLang, t, tv } from './i18n.js';
import { GridMap } from './map.js';

const SUPERVISE = new Set(['admin', 'supervisor', 'operator']);
const EVENT_TYPES = ['created', 'updated', 'confirm', 'dismiss', 'merge', 'dispatch', 'accept',
  'return', 'resolve', 'close', 'reopen', 'recall', 'reclassify', 'escalate'];

const state = { me: null, departments: null, mapData: null, view: null, events: null,
  refreshTimer: null, tick: null };
const main = document.getElementById('main');

// -- DOM helpers ------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function toast(text, bad = false) {
  const box = document.getElementById('toast');
  box.textContent = text;
  box.className = bad ? 'show bad' : 'show';
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ''; }, 4000);
}

function fmtTime(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(getLang(), { hour12: false });
}

function fmtDuration(ms) {
  const s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  const pad = (n) => String(n).padStart(2, '0');
  return `${d ? `${d}d ` : ''}${pad(hh)}:${pad(mm)}:${pad(ss)}`;
}

// An SLA countdown: updated every second by the page's one ticker.
function countdown(dueAt) {
  return h('span', { class: 'countdown', 'data-due': dueAt });
}

function tickCountdowns() {
  const now = Date.now();
  for (const node of document.querySelectorAll('.countdown')) {
    const left = Date.parse(node.dataset.due) - now;
    node.textContent = left >= 0 ? fmtDuration(left) : t('overdueBy', { d: fmtDuration(left) });
    node.classList.toggle('late', left < 0);
  }
}

function badge(escalation) {
  if (!escalation || escalation === 'none') return null;
  return h('span', { class: `card ${escalation}` }, tv(escalation));
}

function deptName(id) {
  const dep = state.departments && state.departments.departments.find((d) => d.id === id);
  if (!dep) return id;
  return getLang() === 'zh-CN' ? dep.name_zh : dep.name_en;
}

function place(ticket) {
  return [ticket.town, ticket.village, ticket.cell_id].filter(Boolean).join(' · ');
}

function ticketLink(ticket) {
  return h('a', { href: `#/ticket/${encodeURIComponent(ticket.ticket_id)}` }, ticket.ticket_id);
}

async function act(ticket, action, extra = {}) {
  try {
    const updated = await api(`/tickets/${encodeURIComponent(ticket.ticket_id)}/actions`,
      { method: 'POST', body: { action, version: ticket.version, ...extra } });
    toast(t('done', { id: ticket.ticket_id, action: tv(action) }));
    return updated;
  } catch (err) {
    toast(t('failed', { msg: err.message }), true);
    return null;
  }
}

async function loadMapData() {
  if (!state.mapData) state.mapData = await api('/console/map');
  return state.mapData;
}

// -- the frame: header, navigation, language, live indicator ------------------------------
function views() {
  if (!state.me) return [];
  if (SUPERVISE.has(state.me.role)) return ['review', 'map', 'board', 'assessment'];
  if (state.me.role === 'department') return ['work', 'assessment'];
  return ['map', 'board'];
}

function renderFrame() {
  for (const node of document.querySelectorAll('[data-t]')) node.textContent = t(node.dataset.t);
  const langButton = document.getElementById('lang');
  langButton.textContent = t('lang');
  langButton.setAttribute('aria-label', t('langName'));
  const nav = document.getElementById('nav');
  const current = (location.hash.split('/')[1] || '').split('?')[0];
  nav.replaceChildren(...views().map((v, i) => h('a', {
    href: `#/${v}`, 'aria-current': current === v ? 'page' : null,
    title: `Alt+${i + 1}` }, t(v))));
  const who = document.getElementById('who');
  const logout = document.getElementById('logout');
  logout.textContent = t('logout');
  if (state.me) {
    who.textContent = `${state.me.display_name || state.me.username} (${state.me.role}`
      + `${state.me.department ? ` · ${deptName(state.me.department)}` : ''})`;
    logout.hidden = false;
    logout.textContent = t('logout');
  } else {
    who.textContent = '';
    logout.hidden = true;
  }
  setLive(state.liveState || 'off');
}

function setLive(which) {
  state.liveState = which;
  const node = document.getElementById('live');
  node.className = `live ${which}`;
  node.textContent = state.me ? t({ on: 'liveOn', connecting: 'liveConnecting', off: 'liveOff' }[which]) : '';
  node.hidden = !state.me;
}

// Server-sent events: the browser reconnects by itself and sends Last-Event-ID.
function connectEvents() {
  if (state.events) state.events.close();
  setLive('connecting');
  const source = new EventSource('/events');
  state.events = source;
  source.onopen = () => setLive('on');
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) { setLive('connecting'); return; }
    // the browser gave up (an answer other than the stream, e.g. a proxy's 502): try
    // again ourselves, as long as this is still the page's stream
    setLive('off');
    setTimeout(() => { if (state.events === source && state.me) connectEvents(); }, 5000);
  };
  const onEvent = () => scheduleRefresh();
  for (const type of EVENT_TYPES) source.addEventListener(`ticket.${type}`, onEvent);
  // the server could not resume from our Last-Event-ID (older than its change log):
  // what changed meanwhile is unknown, so the view reloads
  source.addEventListener('reset', onEvent);
  source.onmessage = onEvent;
}

// A burst of events (a busy ingest) becomes one refresh: 250 ms after the first event,
// and never more than one a second.
function scheduleRefresh() {
  if (state.refreshTimer) return;
  const wait = Math.max(250, 1000 - (Date.now() - (state.lastRefresh || 0)));
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    state.lastRefresh = Date.now();
    if (state.view && state.view.refresh) state.view.refresh();
  }, wait);
}

// -- login ------------------------------------------------------------------------------
function renderLogin(message) {
  state.view = null;
  const error = h('p', { class: 'error', id: 'login-error', role: 'alert' }, message || '');
  const form = h('form', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h2', { id: 'login-title' }, t('loginTitle')),
    h('label', { for: 'username' }, t('username')),
    h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true }),
    h('label', { for: 'password' }, t('password')),
    h('input', { id: 'password', name: 'password', type: 'password',
      autocomplete: 'current-password', required: true }),
    h('button', { type: 'submit', class: 'primary' }, t('login')), error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const me = await api('/auth/login', { method: 'POST', body: {
        username: form.username.value, password: form.password.value } });
      await signedIn(me);
    } catch (err) {
      error.textContent = t('loginFailed', { msg: err.message });
    }
  });
  main.replaceChildren(form);
  renderFrame();
  form.username.focus();
}

async function signedIn(me) {
  state.me = me;
  setCsrf(me.csrf_token);
  state.departments = await api('/departments');
  connectEvents();
  const first = views()[0];
  if (!location.hash || location.hash === '#/' || location.hash === '#/login') {
    location.hash = `#/${first}`;
  }
  route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('/auth/logout', { method: 'POST' }); } catch (err) { /* ended anyway */ }
  if (state.events) state.events.close();
  state.me = null;
  setCsrf(null);
  location.hash = '#/login';
  renderLogin();
});

document.getElementById('lang').addEventListener('click', () => {
  setLang(getLang() === 'zh-CN' ? 'en' : 'zh-CN');
  renderFrame();
  if (state.me) route(); else renderLogin();
});

// -- review queue -----------------------------------------------------------------------
class ReviewView {
  constructor() {
    this.index = 0; this.items = []; this.mode = null; this.currentId = null;
    this.chosen = new Map(); // ticket id -> the department picked for it (kept across refreshes)
  }

  async render() {
    const data = await api('/review/queue?limit=200');
    this.items = data.items;
    this.total = data.total;
    if (this.currentId) {
      const at = this.items.findIndex((i) => i.ticket.ticket_id === this.currentId);
      if (at >= 0) this.index = at;
    }
    this.index = Math.min(this.index, Math.max(this.items.length - 1, 0));
    this.draw();
  }

  refresh() {
    const busy = this.mode || (document.activeElement && document.activeElement.id === 'confirm-department');
    if (busy) this.stale = true; else this.render();
  }

  draw() {
    const list = h('ol', { class: 'queue', 'aria-label': t('queueCount', { n: this.total }) },
      this.items.map((item, i) => h('li', {},
        h('button', { type: 'button', class: 'queue-item', 'data-ticket': item.ticket.ticket_id,
          'aria-current': i === this.index ? 'true' : null,
          onclick: () => { this.select(i); } },
        h('strong', {}, tv(item.ticket.kind)), ' ', h('span', { class: 'muted' },
          place(item.ticket)), h('br'),
        h('span', { class: 'reason' }, tv(item.ticket.review_reason)), ' · ',
        h('span', { class: 'muted' }, fmtTime(item.ticket.opened_at))))));
    const head = h('h2', { id: 'queue-count' }, t('queueCount', { n: this.total }));
    const detail = this.items.length ? this.detail(this.items[this.index]) :
      h('p', { class: 'empty', id: 'queue-empty' }, t('queueEmpty'));
    main.replaceChildren(h('section', { class: 'review' },
      h('div', { class: 'queue-col' }, head, list), detail, this.keys()));
    tickCountdowns();
  }

  select(i) {
    this.index = Math.max(0, Math.min(i, this.items.length - 1));
    this.mode = null;
    this.currentId = this.items[this.index] ? this.items[this.index].ticket.ticket_id : null;
    this.draw();
    const current = main.querySelector('.queue-item[aria-current="true"]');
    if (current) current.scrollIntoView({ block: 'nearest' });
  }

  detail(item) {
    const ticket = item.ticket;
    this.currentId = ticket.ticket_id;
    const snaps = [...ticket.snapshot_urls, ...((ticket.hotspot && ticket.hotspot.snapshot_urls) || [])];
    const snapshot = snaps.length
      ? h('img', { class: 'snapshot', src: snaps[0], alt: `${t('evidence')} ${ticket.ticket_id}`,
        onerror: (e) => e.target.replaceWith(h('div', { class: 'snapshot none' }, t('snapshotPending'))) })
      : h('div', { class: 'snapshot none' }, t('noSnapshot'));
    const picked = this.chosen.get(ticket.ticket_id) || ticket.department;
    const select = h('select', { id: 'confirm-department',
      onchange: (e) => this.chosen.set(ticket.ticket_id, e.target.value),
      onblur: () => { if (this.stale && !this.mode) { this.stale = false; this.render(); } } },
    state.departments.departments.map((d) => h('option', { value: d.id,
      selected: d.id === picked ? true : null }, deptName(d.id))));
    const sources = h('table', { class: 'sources' },
      h('caption', {}, t('sources')),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('sources')),
        h('th', { scope: 'col' }, t('confirmedN')), h('th', { scope: 'col' }, t('dismissedN')),
        h('th', { scope: 'col' }, t('fpRate')))),
      h('tbody', {}, item.sources.map((s) => h('tr', {},
        h('td', {}, s.source_id, s.auto_dispatch_suspended ? h('span', { class: 'card red' }, t('suspended')) : null),
        h('td', {}, s.confirmed), h('td', {}, s.dismissed),
        h('td', {}, s.false_positive_rate === null ? '—' : `${Math.round(s.false_positive_rate * 100)} %`)))));
    const panel = h('div', { id: 'action-panel' });
    const article = h('article', { class: 'review-item', 'aria-labelledby': 'review-title' },
      h('h2', { id: 'review-title' }, tv(ticket.kind), ' ', ticketLink(ticket)),
      snapshot,
      h('div', { class: 'actions' },
        h('label', { for: 'confirm-department' }, t('department'), ' ',
          h('span', { class: 'muted' }, t('routedTo', { d: deptName(ticket.department) }))),
        select,
        h('button', { type: 'button', class: 'primary', id: 'btn-confirm',
          onclick: () => this.confirm() }, t('confirm'), h('kbd', {}, 'C')),
        h('button', { type: 'button', id: 'btn-dismiss', onclick: () => this.startDismiss() },
          t('dismiss'), h('kbd', {}, 'X')),
        h('button', { type: 'button', id: 'btn-merge', onclick: () => this.startMerge() },
          t('merge'), h('kbd', {}, 'M'))),
      panel,
      h('dl', { class: 'facts' },
        h('dt', {}, t('reason')), h('dd', { id: 'review-reason' }, tv(ticket.review_reason)),
        h('dt', {}, t('place')), h('dd', {}, place(ticket)),
        h('dt', {}, t('detections')), h('dd', {}, t('detectionsN', { n: ticket.detection_count, i: ticket.incident_count })),
        h('dt', {}, t('confidence')), h('dd', {}, ticket.max_confidence.toFixed(2)),
        h('dt', {}, t('opened')), h('dd', {}, fmtTime(ticket.opened_at)),
        h('dt', {}, t('timeLeft')), h('dd', {}, countdown(ticket.due_at))),
      ticket.hotspot ? hotspotFacts(ticket.hotspot) : null,
      sources);
    return article;
  }

  keys() {
    const row = (k, label) => h('li', {}, h('kbd', {}, k), ' ', t(label));
    return h('aside', { class: 'keys', 'aria-label': t('keysTitle') },
      h('h2', {}, t('keysTitle')),
      h('ul', {}, row('J / ↓', 'keyNext'), row('K / ↑', 'keyPrev'), row('C', 'keyConfirm'),
        row('D', 'keyDept'), row('X', 'keyDismiss'), row('M', 'keyMerge'),
        row('1–9', 'keyPick'), row('O', 'keyOpen'), row('Esc', 'keyCancel')));
  }

  current() { return this.items[this.index] && this.items[this.index].ticket; }

  async after(updated) {
    this.mode = null;
    if (updated) { this.currentId = null; await this.render(); }
  }

  async confirm() {
    const ticket = this.current();
    if (!ticket) return;
    const department = main.querySelector('#confirm-department').value;
    const extra = department && department !== ticket.department ? { department } : {};
    await this.after(await act(ticket, 'confirm', extra));
  }

  startDismiss() {
    const ticket = this.current();
    if (!ticket) return;
    this.mode = 'dismiss';
    const input = h('input', { id: 'dismiss-reason', required: true, maxlength: 2000 });
    const form = h('form', { class: 'inline' },
      h('label', { for: 'dismiss-reason' }, t('dismissReason')), input,
      h('button', { type: 'submit', class: 'primary' }, t('dismiss'), h('kbd', {}, '↵')),
      h('button', { type: 'button', onclick: () => this.cancel() }, t('cancel'), h('kbd', {}, 'Esc')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (!input.value.trim()) return;
      await this.after(await act(ticket, 'dismiss', { reason: input.value.trim() }));
    });
    main.querySelector('#action-panel').replaceChildren(form);
    input.focus();
  }

  async startMerge() {
    const ticket = this.current();
    if (!ticket) return;
    this.mode = 'merge';
    const panel = main.querySelector('#action-panel');
    const map = await loadMapData();
    const cell = map.cells.find((c) => c.cell_id === ticket.cell_id);
    const near = new Set([ticket.cell_id, ...(cell ? cell.neighbours : [])]);
    // per cell (at most 9 small lists) rather than every ticket of the kind ever opened
    const lists = await Promise.all([...near].map((cellId) => allTickets({ kind: ticket.kind, cell_id: cellId })));
    this.candidates = lists.flat().filter((c) => c.ticket_id !== ticket.ticket_id
      && OPEN_STATUSES.includes(c.status))
      .sort((a, b) => (a.cell_id === ticket.cell_id ? 0 : 1) - (b.cell_id === ticket.cell_id ? 0 : 1)
        || Date.parse(a.opened_at) - Date.parse(b.opened_at)).slice(0, 9);
    const list = this.candidates.length ? h('ol', { class: 'candidates' },
      this.candidates.map((c, i) => h('li', {}, h('button', { type: 'button', 'data-into': c.ticket_id,
        onclick: () => this.merge(i) }, h('kbd', {}, String(i + 1)), ' ', c.ticket_id, ' · ',
        tv(c.status), ' · ', place(c), ' · ', fmtTime(c.opened_at)))))
      : h('p', { class: 'empty' }, t('noCandidates'));
    panel.replaceChildren(h('div', { class: 'inline', role: 'group', 'aria-label': t('mergeInto') },
      h('h3', {}, t('mergeInto')), list,
      h('button', { type: 'button', onclick: () => this.cancel() }, t('cancel'), h('kbd', {}, 'Esc'))));
  }

  async merge(i) {
    const ticket = this.current();
    const into = this.candidates && this.candidates[i];
    if (!ticket || !into) return;
    await this.after(await act(ticket, 'merge', { into: into.ticket_id }));
  }

  cancel() {
    this.mode = null;
    const panel = main.querySelector('#action-panel');
    if (panel) panel.replaceChildren();
    if (this.stale) { this.stale = false; this.render(); }
  }

  key(e) {
    const k = e.key.toLowerCase();
    if (k === 'escape') { this.cancel(); return true; }
    if (this.mode === 'merge' && /^[1-9]$/.test(k)) { this.merge(Number(k) - 1); return true; }
    if (this.mode) return false;
    if (k === 'j' || k === 'arrowdown') { this.select(this.index + 1); return true; }
    if (k === 'k' || k === 'arrowup') { this.select(this.index - 1); return true; }
    if (k === 'c') { this.confirm(); return true; }
    if (k === 'x') { this.startDismiss(); return true; }
    if (k === 'm') { this.startMerge(); return true; }
    if (k === 'd') { main.querySelector('#confirm-department')?.focus(); return true; }
    if (k === 'o' && this.current()) {
      location.hash = `#/ticket/${encodeURIComponent(this.current().ticket_id)}`;
      return true;
    }
    return false;
  }
}

function hotspotFacts(hs) {
  const ratio = hs.expected > 0 ? (hs.observed / hs.expected).toFixed(1) : '∞';
  return h('dl', { class: 'facts hotspot' },
    h('dt', {}, t('observed')), h('dd', {}, hs.observed),
    h('dt', {}, t('expected')), h('dd', {}, hs.expected),
    h('dt', {}, t('excess')), h('dd', {}, `× ${ratio}`),
    h('dt', {}, t('pValue')), h('dd', {}, hs.p_value));
}

// -- map ----------------------------------------------------------------------------------
class MapView {
  constructor(params) {
    this.shadeBy = 'open';
    this.kind = '';
    this.highlightCells = (params.get('cells') || '').split(',').filter(Boolean);
  }

  async render() {
    const data = await loadMapData();
    this.tickets = await openTickets();
    const kinds = [...new Set(this.tickets.map((x) => x.kind))].sort();
    const shade = h('select', { id: 'shade-by', onchange: (e) => { this.shadeBy = e.target.value; this.reshade(); } },
      h('option', { value: 'open' }, t('shadeOpen')), h('option', { value: 'excess' }, t('shadeExcess')));
    shade.value = this.shadeBy;
    const kindSel = h('select', { id: 'map-kind', onchange: (e) => { this.kind = e.target.value; this.reshade(); } },
      h('option', { value: '' }, t('allKinds')), kinds.map((k) => h('option', { value: k }, tv(k))));
    kindSel.value = this.kind;
    this.map = new GridMap(data, { label: t('mapLabel', { n: data.cells.length, t: this.tickets.length }),
      onCell: (id) => this.showCell(id) });
    this.side = h('aside', { class: 'cell-panel', id: 'cell-panel', 'aria-live': 'polite' },
      h('p', { class: 'muted' }, t('cellHint')));
    this.cellList = h('ul', { class: 'cell-list', id: 'cell-list' });
    const tools = h('div', { class: 'map-tools' },
      h('label', { for: 'shade-by' }, t('shadeBy')), shade,
      h('label', { for: 'map-kind' }, t('kind')), kindSel,
      h('button', { type: 'button', onclick: () => this.map.zoom(1.5), 'aria-label': t('zoomIn') }, '+'),
      h('button', { type: 'button', onclick: () => this.map.zoom(1 / 1.5), 'aria-label': t('zoomOut') }, '−'),
      h('button', { type: 'button', onclick: () => this.map.reset() }, t('reset')),
      h('span', { class: 'legend', 'aria-label': t('legend') },
        [0, 1, 2, 3, 4, 5].map((s) => h('i', { class: `sw s${s}` })),
        h('i', { class: 'sw town' }), t('towns'), h('i', { class: 'sw village' }), t('villages')));
    const frame = h('div', { class: 'map-frame', tabindex: '0', 'aria-label': t('map') }, this.map.svg);
    frame.addEventListener('keydown', (e) => {
      const moves = { ArrowLeft: [-0.1, 0], ArrowRight: [0.1, 0], ArrowUp: [0, -0.1], ArrowDown: [0, 0.1] };
      if (moves[e.key]) { this.map.pan(...moves[e.key]); e.preventDefault(); }
      if (e.key === '+' || e.key === '=') this.map.zoom(1.5);
      if (e.key === '-') this.map.zoom(1 / 1.5);
    });
    main.replaceChildren(h('section', { class: 'mapview' },
      h('div', { class: 'map-col' }, tools, frame),
      h('div', { class: 'side-col' }, this.side,
        h('h2', {}, t('cellsWithTickets')), this.cellList)));
    this.reshade();
    if (this.highlightCells.length) {
      this.map.highlight(this.highlightCells);
      this.showCell(this.highlightCells[0]);
    }
  }

  async refresh() {
    if (!this.map) return;
    this.tickets = await openTickets();
    this.reshade();
    if (this.shownCell) this.showCell(this.shownCell);
  }

  visible() { return this.kind ? this.tickets.filter((x) => x.kind === this.kind) : this.tickets; }

  reshade() {
    const values = new Map();
    const counts = new Map();
    for (const ticket of this.visible()) {
      counts.set(ticket.cell_id, (counts.get(ticket.cell_id) || 0) + 1);
      if (this.shadeBy === 'excess' && ticket.hotspot) {
        const hs = ticket.hotspot;
        const ratio = hs.expected > 0 ? hs.observed / hs.expected : hs.observed;
        for (const id of (hs.member_cells && hs.member_cells.length ? hs.member_cells : [ticket.cell_id])) {
          values.set(id, Math.max(values.get(id) || 0, ratio));
        }
      }
    }
    if (this.shadeBy === 'open') this.map.shade(counts, [1, 2, 3, 5, 8]);
    else this.map.shade(values, [1, 1.5, 2, 3, 5]);
    const cells = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    this.cellList.replaceChildren(...cells.slice(0, 200).map(([id, n]) => h('li', {},
      h('button', { type: 'button', 'data-cell': id, onclick: () => this.showCell(id) }, `${id} (${n})`))));
  }

  showCell(id) {
    this.shownCell = id;
    const cell = this.map.data.cells.find((c) => c.cell_id === id);
    const here = this.visible().filter((x) => x.cell_id === id);
    this.map.highlight([...new Set([id, ...this.highlightCells])]);
    this.side.replaceChildren(
      h('h2', {}, t('cellTickets', { cell: id })),
      cell ? h('p', { class: 'muted' }, [cell.town, cell.village, cell.name].filter(Boolean).join(' · ')) : null,
      here.length ? h('ul', { class: 'tickets' }, here.map((x) => h('li', { 'data-ticket': x.ticket_id },
        ticketLink(x), ' ', tv(x.kind), ' · ', tv(x.status), ' ', badge(x.escalation))))
        : h('p', { class: 'empty' }, t('noTickets')));
  }
}

// -- ticket detail ------------------------------------------------------------------------
class TicketView {
  constructor(id) { this.id = id; }

  async render() {
    const path = `/tickets/${encodeURIComponent(this.id)}`;
    const [ticket, audit] = await Promise.all([api(path), api(`${path}/audit`)]);
    this.ticket = ticket;
    const hs = ticket.hotspot;
    const snaps = [...ticket.snapshot_urls, ...((hs && hs.snapshot_urls) || [])];
    const gallery = h('section', { class: 'gallery', 'aria-labelledby': 'gallery-title' },
      h('h3', { id: 'gallery-title' }, t('evidence')),
      snaps.length ? snaps.slice(0, 12).map((u, i) => h('a', { href: u, target: '_blank', rel: 'noopener' },
        h('img', { src: u, alt: `${t('evidence')} ${i + 1}`, loading: 'lazy',
          onerror: (e) => e.target.replaceWith(h('span', { class: 'muted' }, t('snapshotPending'))) })))
        : h('p', { class: 'empty' }, t('noSnapshot')));
    const timeline = h('section', { 'aria-labelledby': 'timeline-title' },
      h('h3', { id: 'timeline-title' }, t('timeline')),
      h('ol', { class: 'timeline', id: 'timeline' }, audit.map((e) => h('li', {},
        h('time', { datetime: e.at }, fmtTime(e.at)), ' ',
        h('strong', { class: 'actor' }, e.actor_display_name ? `${e.actor_display_name} (${e.actor})` : e.actor),
        ' ', tv(e.action), ' ', h('span', { class: 'muted' }, `${tv(e.from_status)} → ${tv(e.to_status)}`),
        e.note ? h('div', { class: 'note' }, e.note) : null))));
    const hotspot = hs ? h('section', { class: 'hotspot', 'aria-labelledby': 'hs-title' },
      h('h3', { id: 'hs-title' }, t('hotspot')), hotspotFacts(hs),
      hs.hourly_profile && hs.hourly_profile.length ? hourlyChart(hs.hourly_profile) : null,
      hs.top_sources && hs.top_sources.length ? h('div', {}, h('h4', {}, t('topSources')),
        h('ol', {}, hs.top_sources.map((s) => h('li', {}, `${s.source} (${s.count})`)))) : null,
      h('p', {}, t('memberCells'), ': ', (hs.member_cells || []).join(', '), ' ',
        h('a', { class: 'button', href: `#/map?cells=${encodeURIComponent((hs.member_cells || [ticket.cell_id]).join(','))}` }, t('showOnMap'))))
      : null;
    main.replaceChildren(h('section', { class: 'ticket' },
      h('p', {}, h('button', { type: 'button', onclick: () => history.back() }, `← ${t('back')}`)),
      h('h2', {}, tv(ticket.kind), ' ', h('span', { class: 'mono' }, ticket.ticket_id), ' ', badge(ticket.escalation)),
      h('dl', { class: 'facts' },
        h('dt', {}, t('status')), h('dd', { id: 'ticket-status' }, tv(ticket.status)),
        h('dt', {}, t('department')), h('dd', {}, deptName(ticket.department)),
        h('dt', {}, t('priority')), h('dd', {}, ticket.priority),
        h('dt', {}, t('place')), h('dd', {}, place(ticket)),
        h('dt', {}, t('opened')), h('dd', {}, fmtTime(ticket.opened_at)),
        h('dt', {}, t('due')), h('dd', {}, fmtTime(ticket.due_at)),
        h('dt', {}, t('timeLeft')), h('dd', {}, OPEN_STATUSES.includes(ticket.status) ? countdown(ticket.due_at) : '—'),
        ticket.review_reason ? [h('dt', {}, t('reason')), h('dd', {}, tv(ticket.review_reason))] : null),
      state.me.role === 'department' ? workActions(ticket, () => this.render())
        : SUPERVISE.has(state.me.role) ? operatorActions(ticket, () => this.render()) : null,
      ticket.status === 'pending_review' && SUPERVISE.has(state.me.role)
        ? h('p', {}, h('a', { href: '#/review' }, t('workInReview'))) : null,
      h('div', { class: 'two' }, timeline, h('div', {}, gallery, hotspot))));
  }

  refresh() { if (!main.querySelector('form.inline')) this.render(); }
}

function hourlyChart(profile) {
  const SVG = 'http://www.w3.org/2000/svg';
  const s = (name, attrs) => {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const max = Math.max(1, ...profile.map((p) => Math.max(p.observed, p.expected)));
  const w = 24 * 12;
  const hgt = 100;
  const svg = s('svg', { viewBox: `0 0 ${w} ${hgt + 14}`, class: 'chart', role: 'img',
    'aria-label': t('hourly') });
  const byHour = new Map(profile.map((p) => [p.hour, p]));
  let line = '';
  for (let hr = 0; hr < 24; hr += 1) {
    const p = byHour.get(hr) || { observed: 0, expected: 0 };
    const bh = (p.observed / max) * hgt;
    svg.append(s('rect', { x: hr * 12 + 1, y: hgt - bh, width: 10, height: bh, class: 'obs' }));
    line += `${hr ? 'L' : 'M'}${hr * 12 + 6} ${(hgt - (p.expected / max) * hgt).toFixed(1)}`;
    if (hr % 6 === 0) {
      const label = s('text', { x: hr * 12 + 1, y: hgt + 12, class: 'axis' });
      label.textContent = `${hr}h`;
      svg.append(label);
    }
  }
  svg.append(s('path', { d: line, class: 'exp' }));
  return h('figure', {}, h('figcaption', {}, t('hourly')), svg);
}

// -- action bars: what the caller may do to a ticket in its state --------------------------
// spec: { action, label (button), field ('reason' | 'note' | null), prompt (label key),
//         department (true: choose one from the registry) }
function actionBar(ticket, specs, done) {
  const panel = h('div', { class: 'inline-panel' });
  const run = async (spec, extra) => { if (await act(ticket, spec.action, extra)) done(); };
  const open = (spec) => {
    const id = `${spec.action}-${ticket.ticket_id}`;
    const input = spec.department
      ? h('select', { id }, state.departments.departments.map((d) => h('option', {
        value: d.id, selected: d.id === ticket.department ? true : null }, deptName(d.id))))
      : h('input', { id, required: true, maxlength: 2000 });
    const form = h('form', { class: 'inline' },
      h('label', { for: id }, t(spec.prompt)), input,
      h('button', { type: 'submit', class: 'primary' }, t(spec.label)),
      h('button', { type: 'button', onclick: () => panel.replaceChildren() }, t('cancel')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      await run(spec, spec.department ? { department: value } : { [spec.field]: value });
    });
    panel.replaceChildren(form);
    input.focus();
  };
  const buttons = specs.map((spec, i) => h('button', {
    type: 'button', class: i === 0 ? 'primary' : null, 'data-action': spec.action,
    onclick: () => (spec.field || spec.department ? open(spec) : run(spec, {})) }, t(spec.label)));
  if (!buttons.length) return null;
  return h('div', { class: 'work-actions' }, h('div', { class: 'actions' }, buttons), panel);
}

const RETURN = { action: 'return', label: 'return', field: 'reason', prompt: 'returnReason' };

// The department's own actions: accept, resolve with a note, return with a reason.
function workActions(ticket, done) {
  const specs = [];
  if (['dispatched', 'reopened'].includes(ticket.status)) specs.push({ action: 'accept', label: 'accept' });
  if (ticket.status === 'accepted') {
    specs.push({ action: 'resolve', label: 'resolve', field: 'note', prompt: 'resolveNote' });
  }
  if (['dispatched', 'accepted', 'reopened'].includes(ticket.status)) specs.push(RETURN);
  return actionBar(ticket, specs, done);
}

// An operator's actions outside review: re-dispatch a returned ticket, recall, close,
// reopen (pending tickets are worked in the review queue).
function operatorActions(ticket, done) {
  const recall = { action: 'recall', label: 'recall', field: 'reason', prompt: 'recallReason' };
  const reopen = { action: 'reopen', label: 'reopen', field: 'reason', prompt: 'reopenReason' };
  const specs = {
    returned: [{ action: 'dispatch', label: 'dispatch', department: true, prompt: 'department' },
      { action: 'dismiss', label: 'dismiss', field: 'reason', prompt: 'dismissReason' }, recall],
    dispatched: [recall], accepted: [recall], reopened: [recall],
    resolved: [{ action: 'close', label: 'close' }, reopen],
    closed: [reopen],
  }[ticket.status] || [];
  return actionBar(ticket, specs, done);
}

class WorkView {
  async render() {
    const tickets = (await openTickets()).filter((x) => x.status !== 'pending_review');
    tickets.sort((a, b) => Date.parse(a.due_at) - Date.parse(b.due_at));
    main.replaceChildren(h('section', { class: 'work' },
      h('h2', {}, t('work'), ' · ', deptName(state.me.department)),
      tickets.length ? h('ul', { class: 'work-list', id: 'work-list' }, tickets.map((x) => h('li', {
        class: 'work-item', 'data-ticket': x.ticket_id },
      h('div', {}, ticketLink(x), ' ', h('strong', {}, tv(x.kind)), ' ', badge(x.escalation)),
      h('div', { class: 'muted' }, place(x), ' · ', tv(x.status), ' · ', t('timeLeft'), ' ', countdown(x.due_at)),
      workActions(x, () => this.render())))) : h('p', { class: 'empty' }, t('workEmpty'))));
    tickCountdowns();
  }

  refresh() { if (!main.querySelector('form.inline')) this.render(); }
}

// -- supervision board (督办) --------------------------------------------------------------
class BoardView {
  async render() {
    const tickets = await openTickets();
    const groups = new Map();
    for (const x of tickets.sort((a, b) => Date.parse(a.due_at) - Date.parse(b.due_at))) {
      const key = x.department;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(x);
    }
    const sections = [...groups.entries()].map(([dep, list]) => {
      const yellow = list.filter((x) => x.escalation === 'yellow').length;
      const red = list.filter((x) => x.escalation === 'red').length;
      return h('section', { class: 'unit', 'aria-labelledby': `unit-${dep}` },
        h('h3', { id: `unit-${dep}` }, deptName(dep), ' ',
          h('span', { class: 'muted' }, `${list.length}`),
          yellow ? h('span', { class: 'card yellow' }, `${yellow} ${t('yellow')}`) : null,
          red ? h('span', { class: 'card red' }, `${red} ${t('red')}`) : null),
        h('table', { class: 'board' },
          h('thead', {}, h('tr', {}, ['ticket', 'kind', 'place', 'status', 'escalation', 'timeLeft']
            .map((k) => h('th', { scope: 'col' }, t(k))))),
          h('tbody', {}, list.map((x) => h('tr', { 'data-ticket': x.ticket_id },
            h('td', {}, ticketLink(x)), h('td', {}, tv(x.kind)), h('td', {}, place(x)),
            h('td', {}, tv(x.status)), h('td', {}, badge(x.escalation)),
            h('td', {}, countdown(x.due_at)))))));
    });
    main.replaceChildren(h('section', { class: 'board-view' }, h('h2', {}, t('boardTitle')),
      sections.length ? sections : h('p', { class: 'empty' }, t('boardEmpty'))));
    tickCountdowns();
  }

  refresh() { this.render(); }
}

// -- assessment (考核) -------------------------------------------------------------------
class AssessmentView {
  constructor(params) { this.month = params.get('month') || new Date().toISOString().slice(0, 7); }

  async render() {
    const report = await api(`/reports/assessment${query({ month: this.month, format: 'json' })}`);
    const input = h('input', { id: 'month', type: 'month', value: this.month });
    input.addEventListener('change', () => { if (input.value) { this.month = input.value; this.render(); } });
    const pct = (v) => (v === null || v === undefined ? '—' : `${Math.round(v * 100)} %`);
    main.replaceChildren(h('section', { class: 'assessment' },
      h('h2', {}, t('assessmentTitle')),
      h('div', { class: 'map-tools' }, h('label', { for: 'month' }, t('month')), input,
        h('a', { class: 'button', id: 'csv-link', download: `assessment-${this.month}.csv`,
          href: `/reports/assessment${query({ month: this.month, format: 'csv' })}` }, t('csv'))),
      h('table', { class: 'board' },
        h('thead', {}, h('tr', {}, ['unit', 'tickets', 'onTime', 'returnRate', 'reminders',
          'yellowCards', 'redCards'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, report.departments.map((r) => h('tr', {},
          h('td', {}, deptName(r.department)), h('td', {}, r.tickets), h('td', {}, pct(r.on_time_rate)),
          h('td', {}, pct(r.return_rate)), h('td', {}, r.reminders), h('td', {}, r.overdue),
          h('td', {}, r.red_cards)))))));
  }
}

// -- routing and keys ---------------------------------------------------------------------
const VIEWS = { review: ReviewView, map: MapView, board: BoardView, assessment: AssessmentView,
  work: WorkView };
// views' earlier names, for bookmarks
const RENAMED = { evaluation: 'assessment' };

async function route() {
  if (!state.me) { renderLogin(); return; }
  const [path, q] = location.hash.replace(/^#\/?/, '').split('?');
  const params = new URLSearchParams(q || '');
  const [name, ...rest] = path.split('/');
  if (RENAMED[name]) { location.hash = `#/${RENAMED[name]}${q ? `?${q}` : ''}`; return; }
  renderFrame();
  let view;
  if (name === 'ticket' && rest.length) view = new TicketView(decodeURIComponent(rest.join('/')));
  else if (VIEWS[name] && views().includes(name)) view = new VIEWS[name](params);
  else { location.hash = `#/${views()[0]}`; return; }
  state.view = view;
  try {
    await view.render();
    tickCountdowns();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { state.me = null; renderLogin(); return; }
    main.replaceChildren(h('p', { class: 'error', role: 'alert' }, t('failed', { msg: err.message })));
  }
}

document.addEventListener('keydown', (e) => {
  if (!state.me || e.ctrlKey || e.metaKey) return;
  if (e.altKey && /^[1-9]$/.test(e.key)) {
    const v = views()[Number(e.key) - 1];
    if (v) { location.hash = `#/${v}`; e.preventDefault(); }
    return;
  }
  const tag = (e.target.tagName || '').toLowerCase();
  const typing = ['input', 'textarea', 'select'].includes(tag);
  if (typing && e.key !== 'Escape') return;
  if (state.view && state.view.key && state.view.key(e)) e.preventDefault();
});

window.addEventListener('hashchange', route);

async function start() {
  setLang(initialLang());
  renderFrame();
  state.tick = setInterval(tickCountdowns, 1000);
  const session = await api('/console/session');
  if (session.signed_in) await signedIn(session.me);
  else renderLogin();
}

start();
