// Shared by the operator console (console.js) and the zone editor (editor.js): authenticated
// fetch with the token form, images as object URLs, the live event stream (SSE read with
// fetch, so a refusal can show the token form), relative times that tick, and a small DOM
// builder.
//
// Authentication: the gateway wants the console token for every read of camera or incident
// data and for every change. The operator enters it once; the page trades it for a session
// cookie (POST /api/session: HttpOnly, SameSite=Strict, a hash of the token) that reads then
// carry, and sends it as an Authorization header only with changes. The token is never put
// in a URL.
//
// Plain script, no modules and no build step: it defines one global, `Gateway`.
'use strict';

const Gateway = (() => {
  const TOKEN_KEY = 'gateway.token';

  // ---- DOM ---------------------------------------------------------------------------------

  /** el('li', {class: 'row', dataset: {id: 'x'}, onclick: f}, child, 'text', ...) */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // ---- token -------------------------------------------------------------------------------

  function token() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
  }

  // One pending prompt shared by every request that was refused meanwhile: they all resume
  // (or fail) together when the operator saves (or cancels) the form.
  let tokenPrompt = null;

  function askForToken(status, reason) {
    if (tokenPrompt) return tokenPrompt.promise;
    let resolve, reject;
    const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
    tokenPrompt = { promise };

    const had = token() !== '';
    const input = el('input', { id: 'token-input', type: 'password', autocomplete: 'off',
      spellcheck: 'false', required: true, 'aria-describedby': 'token-help' });
    const panel = el('section', { id: 'token-panel', class: 'token-panel', role: 'dialog',
      'aria-modal': 'false', 'aria-labelledby': 'token-title' },
      el('form', { id: 'token-form', onsubmit: save },
        el('h2', { id: 'token-title' }, 'Console token needed'),
        el('p', { id: 'token-help' },
          had ? `The gateway refused the stored token (HTTP ${status}${reason ? `: ${reason}` : ''}). `
              : `The gateway asked for a token (HTTP ${status}${reason ? `: ${reason}` : ''}). `,
          'Paste the console token: the contents of the file named by token_file in the ',
          'gateway\'s [console] configuration (or of the variable named by token_env). ',
          'It is kept in this browser only: viewing uses a session cookie made from it, changes ',
          'send it as an Authorization header, never in a URL. ',
          'If the gateway has no token configured, changes are refused for everyone.'),
        el('label', { for: 'token-input' }, 'Token'),
        el('div', { class: 'token-row' },
          input,
          el('button', { id: 'token-save', type: 'submit', class: 'primary' }, 'Save and retry'),
          el('button', { id: 'token-cancel', type: 'button', onclick: cancel }, 'Cancel'))));
    document.body.prepend(panel);
    input.focus();

    function finish() { panel.remove(); tokenPrompt = null; }
    function save(event) {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      try { localStorage.setItem(TOKEN_KEY, value); } catch { /* private mode: header only */ }
      finish();
      resolve(value);
    }
    function cancel() {
      finish();
      reject(new Error('no token given'));
    }
    return promise;
  }

  // ---- fetch -------------------------------------------------------------------------------

  // Offset of the gateway's clock from ours, from the `Date` header of its answers, so ages
  // stay right on a wall screen whose clock drifted. Only trusted beyond 2 s (the header has
  // one-second resolution).
  let clockOffsetMs = 0;

  function noteServerDate(response) {
    const header = response.headers.get('date');
    const serverMs = header ? Date.parse(header) : NaN;
    if (!Number.isFinite(serverMs)) return;
    const offset = serverMs + 500 - Date.now();
    clockOffsetMs = Math.abs(offset) > 2000 ? offset : 0;
  }

  /** The gateway's idea of now, in ms since the epoch. */
  function now() { return Date.now() + clockOffsetMs; }

  // One session request shared by every read refused meanwhile.
  let sessionRequest = null;

  /** Trades the token for the session cookie; resolves to whether the gateway took it. */
  function startSession(value) {
    if (!sessionRequest) {
      sessionRequest = fetch('/api/session', {
        method: 'POST', headers: { Authorization: `Bearer ${value}` }, cache: 'no-store',
        credentials: 'same-origin',
      }).then((response) => response.ok, () => false).finally(() => { sessionRequest = null; });
    }
    return sessionRequest;
  }

  /**
   * fetch() as the console: reads carry the session cookie, changes the bearer token. On
   * 401/403 a read first tries to start a session with the stored token; otherwise the token
   * form is shown, and the request is tried again with what the operator enters, as often as
   * they enter one (cancelling rejects the promise).
   */
  async function apiFetch(path, options = {}) {
    const method = (options.method || 'GET').toUpperCase();
    const reads = method === 'GET' || method === 'HEAD';
    let sessionTried = false;
    for (;;) {
      const headers = new Headers(options.headers || {});
      const stored = token();
      if (stored && !reads) headers.set('Authorization', `Bearer ${stored}`);
      const response = await fetch(path, { ...options, headers, cache: 'no-store', credentials: 'same-origin' });
      noteServerDate(response);
      if (response.status !== 401 && response.status !== 403) return response;
      if (reads && stored && !sessionTried) {
        sessionTried = true;
        if (await startSession(stored)) continue;
      }
      const body = await response.clone().json().catch(() => null);
      const entered = await askForToken(response.status, body && typeof body.error === 'string' ? body.error : '');
      if (reads) await startSession(entered);
    }
  }

  /** apiFetch and JSON: resolves to {ok, status, body}; body is {error} when not JSON. */
  async function apiJson(path, options = {}) {
    const init = { ...options };
    if (init.json !== undefined) {
      init.method = init.method || 'POST';
      init.headers = { 'Content-Type': 'application/json', ...(init.headers || {}) };
      init.body = JSON.stringify(init.json);
      delete init.json;
    }
    const response = await apiFetch(path, init);
    const text = await response.text();
    let body;
    try { body = text ? JSON.parse(text) : null; } catch { body = { error: text.slice(0, 300) }; }
    return { ok: response.ok, status: response.status, body };
  }

  /** Like apiJson but rejects unless 2xx, with the gateway's error text. */
  async function getJson(path) {
    const result = await apiJson(path);
    if (!result.ok) {
      const detail = result.body && result.body.error ? `: ${result.body.error}` : '';
      const error = new Error(`${path} answered HTTP ${result.status}${detail}`);
      error.status = result.status;
      throw error;
    }
    return result.body;
  }

  /**
   * Fetches an image with the header and returns an object URL for it, or null on 404.
   * The caller owns the URL: hand it to an ObjectUrlSlot so the previous one is revoked.
   */
  async function fetchImageUrl(path) {
    const response = await apiFetch(path);
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`${path} answered HTTP ${response.status}`);
    return URL.createObjectURL(await response.blob());
  }

  /** Holds one object URL at a time and revokes the one it replaces. */
  class ObjectUrlSlot {
    constructor() { this.url = null; }
    set(url) {
      if (this.url && this.url !== url) URL.revokeObjectURL(this.url);
      this.url = url;
    }
    clear() { this.set(null); }
  }

  // ---- times -------------------------------------------------------------------------------

  function pad2(n) { return String(n).padStart(2, '0'); }

  /** 42 s, 12 min 05 s, 3 h 12 min, 2 d 3 h: precise while fresh, short when old. */
  function formatDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${pad2(s % 60)} s`;
    const h = Math.floor(m / 60);
    if (h < 24) return `${h} h ${pad2(m % 60)} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function formatClock(ms) {
    return new Date(ms).toLocaleString(undefined, { hour12: false });
  }

  /**
   * A <time> whose text is the age of `sinceMs` (prefix + age + suffix), kept up to date by
   * the ticker below. A missing time shows as an em dash.
   */
  function ageElement(sinceMs, prefix = '', suffix = ' ago') {
    const node = el('time', { class: 'age' });
    setAge(node, sinceMs, prefix, suffix);
    return node;
  }

  function setAge(node, sinceMs, prefix = '', suffix = ' ago') {
    if (!Number.isFinite(sinceMs)) {
      delete node.dataset.sinceMs;
      node.textContent = `${prefix}—`;
      return;
    }
    node.dataset.sinceMs = String(sinceMs);
    node.dataset.prefix = prefix;
    node.dataset.suffix = suffix;
    node.dateTime = new Date(sinceMs).toISOString();
    node.title = formatClock(sinceMs);
    tickOne(node, now());
  }

  function tickOne(node, nowMs) {
    const text = node.dataset.prefix + formatDuration(nowMs - Number(node.dataset.sinceMs))
      + node.dataset.suffix;
    if (node.textContent !== text) node.textContent = text;
  }

  // One timer for every age on the page; a few hundred text updates a second are cheap, and
  // only the ones whose text changed touch the DOM.
  setInterval(() => {
    if (document.hidden) return;
    const nowMs = now();
    for (const node of document.querySelectorAll('time[data-since-ms]')) tickOne(node, nowMs);
  }, 1000);

  // ---- live events -------------------------------------------------------------------------

  /**
   * Reads `GET /api/events` for as long as the page lives, reconnecting with jittered
   * exponential backoff (1 s doubling to 30 s). Callbacks:
   *   onOpen()                 after every (re)connect: refetch the lists, events may be lost
   *   onEvent(type, data)      each event, data parsed as JSON
   *   onStatus(state, detail)  'live' | 'connecting' | 'retrying' (detail: seconds)
   * The gateway sends a comment every 15 s, so 45 s of silence means a dead connection.
   */
  function streamEvents({ onOpen, onEvent, onStatus }) {
    const SILENCE_LIMIT_MS = 45000;
    let backoffMs = 1000;

    async function connectOnce() {
      const controller = new AbortController();
      let lastByteMs = Date.now();
      const watchdog = setInterval(() => {
        if (Date.now() - lastByteMs > SILENCE_LIMIT_MS) controller.abort();
      }, 5000);
      try {
        onStatus('connecting');
        const response = await apiFetch('/api/events', {
          headers: { Accept: 'text/event-stream' }, signal: controller.signal });
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onStatus('live');
        const openedMs = Date.now();
        onOpen();
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        const parser = sseParser((type, data) => {
          backoffMs = 1000;
          let parsed;
          try { parsed = JSON.parse(data); } catch { return; }
          onEvent(type, parsed);
        });
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          lastByteMs = Date.now();
          if (lastByteMs - openedMs > 10000) backoffMs = 1000;
          parser(decoder.decode(value, { stream: true }));
        }
      } finally {
        clearInterval(watchdog);
        controller.abort();
      }
    }

    (async () => {
      for (;;) {
        try {
          await connectOnce();
        } catch (error) {
          if (error && error.message === 'no token given') backoffMs = 30000;
        }
        const waitMs = backoffMs * (0.8 + Math.random() * 0.4);
        onStatus('retrying', Math.round(waitMs / 1000));
        await new Promise((resolve) => setTimeout(resolve, waitMs));
        backoffMs = Math.min(backoffMs * 2, 30000);
      }
    })();
  }

  /** Incremental text/event-stream parser: feed it chunks, it calls dispatch(type, data). */
  function sseParser(dispatch) {
    let buffer = '';
    let type = '';
    let data = [];
    return (chunk) => {
      buffer += chunk;
      // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
      const cut = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
      buffer = lines.pop() + buffer.slice(cut);
      for (const line of lines) {
        if (line === '') {
          if (data.length) dispatch(type || 'message', data.join('\n'));
          type = '';
          data = [];
        } else if (!line.startsWith(':')) {
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'event') type = value;
          else if (field === 'data') data.push(value);
        }
      }
    };
  }

  // ---- labels ------------------------------------------------------------------------------

  const KIND_LABELS = {
    misparked_bike: 'Misparked bike',
    trash_overflow: 'Trash overflow',
    fallen_person: 'Fallen person',
  };

  function kindLabel(kind) {
    return KIND_LABELS[kind] || String(kind || 'unknown').replace(/_/g, ' ');
  }

  /** Camera states grouped the way the summary counts them. */
  function cameraGroup(state) {
    return state === 'online' || state === 'degraded' || state === 'offline' ? state : 'other';
  }

  function place(item) {
    return [item.street, item.community, item.grid].filter(Boolean).join(' / ') || 'unassigned';
  }

  /** Writes a line into the page's aria-live region (and its visible status line, if any). */
  function announce(text) {
    const region = document.getElementById('announcer');
    if (!region) return;
    // Clearing first makes screen readers repeat a message identical to the last one.
    region.textContent = '';
    setTimeout(() => { region.textContent = text; }, 50);
  }

  return {
    el, token, apiFetch, apiJson, getJson, fetchImageUrl, ObjectUrlSlot, now,
    formatDuration, formatClock, ageElement, setAge, streamEvents, sseParser,
    kindLabel, cameraGroup, place, announce,
  };
})();
