// The operator console: live incident list with answers, and the health of every camera.
// Lists are fetched once and after every reconnect of the event stream; between those, the
// stream's `incident` and `camera` events keep them current. Needs common.js (`Gateway`).
'use strict';

(() => {
  const { el, apiJson, getJson, fetchImageUrl, ObjectUrlSlot, ageElement, kindLabel, place,
    cameraGroup, announce } = Gateway;

  const OPERATOR_KEY = 'gateway.operator';
  const INCIDENT_LIMIT = 200;
  const KNOWN_KINDS = ['misparked_bike', 'trash_overflow', 'fallen_person'];
  const ACTIONS = [
    { action: 'ack', label: 'Acknowledge', state: 'acknowledged', done: 'Acknowledged' },
    { action: 'resolved', label: 'Resolve', state: 'resolved', done: 'Resolved' },
    { action: 'false_alarm', label: 'False alarm', state: 'false_alarm', done: 'Marked false alarm' },
  ];
  const ACTIVE_STATES = new Set(['open', 'acknowledged']);
  // Problems first: the order of the camera health list.
  const GROUP_ORDER = { offline: 0, degraded: 1, other: 2, online: 3 };

  /** incident_id → {data, row, thumbSlot, thumbKey, live, newUntilMs, pending} */
  const incidents = new Map();
  /** camera id → {data, tile, signature} */
  const cameras = new Map();
  let cameraGroupFilter = '';

  const $ = (id) => document.getElementById(id);
  const incidentList = $('incident-list');
  const cameraList = $('camera-list');

  // ---- operator name -----------------------------------------------------------------------

  function operatorName() {
    try { return localStorage.getItem(OPERATOR_KEY) || 'operator'; } catch { return 'operator'; }
  }

  function setUpOperator() {
    const input = $('operator-name');
    try { input.value = localStorage.getItem(OPERATOR_KEY) || ''; } catch { /* no storage */ }
    input.addEventListener('change', () => {
      const name = input.value.trim();
      try {
        if (name) localStorage.setItem(OPERATOR_KEY, name);
        else localStorage.removeItem(OPERATOR_KEY);
      } catch { /* no storage: the default name is used */ }
    });
  }

  // ---- incidents ---------------------------------------------------------------------------

  /**
   * How recent a view is, so a list fetched just before an event cannot overwrite the newer
   * state the event brought (answers do not necessarily change `seq` or `updated_ms`).
   */
  function freshness(view) {
    const answerTimes = (view.answers || []).map((a) => a.at_ms || 0);
    return Math.max(view.updated_ms || 0, view.cleared_ms || 0, view.opened_ms || 0, ...answerTimes);
  }

  function upsertIncident(view, live) {
    if (!view || typeof view.incident_id !== 'string') return;
    let entry = incidents.get(view.incident_id);
    if (!entry) {
      entry = { data: view, row: null, thumbSlot: new ObjectUrlSlot(), thumbKey: null,
        live, newUntilMs: 0, pending: null };
      incidents.set(view.incident_id, entry);
      if (live && view.state === 'open') {
        entry.newUntilMs = Date.now() + 15000;
        announce(`New incident: ${kindLabel(view.kind)} at ${place(view)}, camera ${view.camera}`);
      }
    } else if (freshness(view) >= freshness(entry.data)) {
      entry.data = view;
    }
    scheduleRender();
  }

  function dropIncident(id) {
    const entry = incidents.get(id);
    if (!entry) return;
    entry.thumbSlot.clear();
    if (entry.row) { thumbObserver.unobserve(entry.row); entry.row.remove(); }
    incidents.delete(id);
  }

  async function loadIncidents() {
    const message = $('incident-message');
    try {
      const body = await getJson(`/api/incidents?limit=${INCIDENT_LIMIT}`);
      const list = Array.isArray(body && body.incidents) ? body.incidents : [];
      const ids = new Set(list.map((view) => view.incident_id));
      for (const id of [...incidents.keys()]) if (!ids.has(id)) dropIncident(id);
      for (const view of list) upsertIncident(view, false);
      message.hidden = true;
      incidentList.dataset.loaded = 'true';
    } catch (error) {
      message.textContent = `Could not load incidents: ${error.message}`;
      message.hidden = false;
    }
    scheduleRender();
  }

  function matchesIncidentFilters(view, withState) {
    const grid = $('filter-grid').value;
    const kind = $('filter-kind').value;
    const show = $('filter-state').value;
    if (grid && view.grid !== grid) return false;
    if (kind && view.kind !== kind) return false;
    if (!withState || show === 'all') return true;
    return show === 'open' ? view.state === 'open' : ACTIVE_STATES.has(view.state);
  }

  function renderIncidents() {
    fillSelect($('filter-grid'), [...incidents.values()].map((e) => e.data.grid)
      .concat([...cameras.values()].map((c) => c.data.grid)));
    fillSelect($('filter-kind'), KNOWN_KINDS.concat([...incidents.values()].map((e) => e.data.kind)),
      kindLabel);

    const visible = [...incidents.values()]
      .filter((entry) => matchesIncidentFilters(entry.data, true))
      .sort((a, b) => (b.data.opened_ms || 0) - (a.data.opened_ms || 0));
    for (const entry of visible) updateIncidentRow(entry);
    placeInOrder(incidentList, visible.map((entry) => entry.row));
    $('incident-empty').hidden = visible.length > 0;

    const counts = {};
    for (const entry of incidents.values()) {
      if (matchesIncidentFilters(entry.data, false)) counts[entry.data.state] = (counts[entry.data.state] || 0) + 1;
    }
    $('incident-counts').textContent =
      `${counts.open || 0} open · ${counts.acknowledged || 0} acknowledged`;
    document.title = counts.open ? `(${counts.open}) Gateway console` : 'Gateway console';
  }

  function incidentSignature(entry) {
    return JSON.stringify([entry.data, entry.pending, entry.newUntilMs > Date.now()]);
  }

  function updateIncidentRow(entry) {
    const view = entry.data;
    if (!entry.row) {
      entry.row = el('li', { class: 'incident', dataset: { incidentId: view.incident_id,
        arrived: entry.live ? 'event' : 'list' } });
      thumbObserver.observe(entry.row);
    }
    const signature = incidentSignature(entry);
    if (entry.row.dataset.signature === signature) return;
    const row = entry.row;
    row.dataset.signature = signature;
    row.dataset.state = view.state;
    row.dataset.camera = view.camera;
    row.dataset.kind = view.kind;
    row.classList.toggle('is-new', entry.newUntilMs > Date.now());
    if (entry.newUntilMs > Date.now()) {
      setTimeout(scheduleRender, entry.newUntilMs - Date.now() + 50);
    }

    const answers = view.answers || [];
    const last = answers[answers.length - 1];
    const flags = [
      view.reminded && el('span', { class: 'flag' }, 'reminded'),
      view.escalated && el('span', { class: 'flag flag-escalated' }, 'escalated'),
    ];
    const detailParts = [view.detail, Number.isFinite(view.score) ? `score ${view.score.toFixed(2)}` : null,
      view.count > 1 ? `${view.count} objects` : null].filter(Boolean);
    const body = el('div', { class: 'incident-body' },
      el('div', { class: 'incident-title' },
        el('strong', { class: 'kind' }, kindLabel(view.kind)), ' ',
        el('span', { class: `state-badge state-${view.state}` }, String(view.state).replace('_', ' ')),
        ...flags),
      el('div', { class: 'place', lang: 'zh' }, place(view)),
      el('div', { class: 'meta' },
        'camera ', el('a', { href: `/editor?camera=${encodeURIComponent(view.camera)}` }, view.camera),
        view.zone ? ` · zone ${view.zone}` : '', view.steward ? ` · steward ${view.steward}` : ''),
      detailParts.length ? el('div', { class: 'detail' }, detailParts.join(' · ')) : null,
      el('div', { class: 'times' },
        ageElement(view.opened_ms, 'opened ', ' ago'),
        view.state === 'cleared' && Number.isFinite(view.cleared_ms)
          ? [' · ', ageElement(view.cleared_ms, 'cleared ', ' ago')] : null,
        last ? [' · ', `${last.action.replace('_', ' ')} by ${last.by} `, ageElement(last.at_ms, '', ' ago')] : null));

    const actions = el('div', { class: 'actions', role: 'group', 'aria-label': 'Answer' },
      ACTIONS.map(({ action, label, state }) => el('button', {
        type: 'button', dataset: { action },
        class: action === 'ack' ? 'primary' : '',
        disabled: entry.pending !== null || view.state === state,
        'aria-busy': entry.pending === action ? 'true' : null,
        onclick: () => answer(entry, action),
      }, entry.pending === action ? `${label}…` : label)), teachButton(entry));

    let thumb = row.querySelector('.thumb');
    if (!thumb) thumb = makeThumb(entry);
    // The clip player is kept across re-renders (a playing clip goes on playing).
    let clip = row.querySelector('.clip');
    if (view.has_clip && !clip) clip = makeClip(entry);
    if (view.has_clip) body.append(clip);
    row.replaceChildren(thumb, body, actions);
    thumb.disabled = !view.has_snapshot;
  }

  function makeThumb(entry) {
    const img = el('img', { alt: '', width: 160, height: 90, decoding: 'async' });
    return el('button', { type: 'button', class: 'thumb', 'aria-label': 'Enlarge snapshot',
      onclick: () => {
        if (!entry.thumbSlot.url) return;
        $('snapshot-large').src = entry.thumbSlot.url;
        $('snapshot-large').alt = `Snapshot: ${kindLabel(entry.data.kind)} at ${place(entry.data)}`;
        $('snapshot-title').textContent = `${kindLabel(entry.data.kind)} — ${place(entry.data)}`;
        $('snapshot-dialog').showModal();
      } }, img);
  }

  /**
   * The incident's clip, played inline. Nothing is fetched until the operator presses play
   * (every read is written to the gateway's access log, with the operator's name). While the
   * post-roll is still being recorded the gateway answers 404: the player says so and the
   * next press tries again.
   */
  function makeClip(entry) {
    const id = entry.data.incident_id;
    const video = el('video', { class: 'clip-video', controls: true, playsinline: true, preload: 'none',
      width: 320, height: 180, 'aria-label': `Clip: ${kindLabel(entry.data.kind)}`,
      dataset: { clipFor: id } });
    video.muted = true;
    const status = el('span', { class: 'clip-status', role: 'status' }, 'clip');
    const source = () => `/api/incidents/${encodeURIComponent(id)}/clip.mp4?operator=${encodeURIComponent(operatorName())}`;
    video.src = source();
    video.addEventListener('loadedmetadata', () => {
      status.textContent = `clip ${Math.round(video.duration)} s`;
      video.dataset.loaded = 'true';
    });
    video.addEventListener('error', () => {
      status.textContent = 'clip not ready yet (being recorded): press play again in a moment';
      video.dataset.loaded = 'false';
      // A fresh source, so the next play asks again.
      video.src = source();
    });
    return el('div', { class: 'clip' }, video, status);
  }

  // Snapshots are fetched only for rows on screen, and again only when `seq` changes.
  const thumbObserver = new IntersectionObserver((records) => {
    for (const record of records) {
      if (!record.isIntersecting) continue;
      const entry = incidents.get(record.target.dataset.incidentId);
      if (entry) loadThumb(entry);
    }
  }, { rootMargin: '200px' });

  async function loadThumb(entry) {
    const view = entry.data;
    const key = view.has_snapshot ? `${view.incident_id}#${view.seq}` : null;
    if (!key || entry.thumbKey === key) return;
    entry.thumbKey = key;
    try {
      const url = await fetchImageUrl(`/api/incidents/${encodeURIComponent(view.incident_id)}/snapshot.jpg`
        + `?operator=${encodeURIComponent(operatorName())}`);
      if (!incidents.has(view.incident_id)) { if (url) URL.revokeObjectURL(url); return; }
      const img = entry.row && entry.row.querySelector('.thumb img');
      if (url && img) {
        img.src = url;
        img.alt = `Snapshot: ${kindLabel(view.kind)}`;
      }
      entry.thumbSlot.set(url);
    } catch {
      entry.thumbKey = null; // try again next time the row scrolls into view
    }
  }

  async function answer(entry, action) {
    const view = entry.data;
    const spec = ACTIONS.find((a) => a.action === action);
    entry.pending = action;
    scheduleRender();
    try {
      const result = await apiJson(`/api/incidents/${encodeURIComponent(view.incident_id)}/answer`,
        { json: { action, by: operatorName() } });
      if (result.ok) {
        const outcome = result.body && result.body.outcome;
        if (outcome === 'too_many') {
          showIncidentMessage(`${spec.label} not recorded for ${view.incident_id}: it already has the most answers an incident keeps`);
        } else {
          const duplicate = outcome === 'duplicate';
          announce(`${spec.done}${duplicate ? ' (already recorded)' : ''}: ${kindLabel(view.kind)} at ${place(view)}`);
        }
      } else {
        const why = result.body && result.body.error ? result.body.error : `HTTP ${result.status}`;
        showIncidentMessage(`${spec.label} failed for ${view.incident_id}: ${why}`);
      }
    } catch (error) {
      showIncidentMessage(`${spec.label} failed for ${view.incident_id}: ${error.message}`);
    } finally {
      entry.pending = null;
      scheduleRender();
      // The event stream brings the new state; this covers a stream that is down right now.
      loadIncidents();
    }
  }

  /**
   * After a false alarm on a trash incident: one click makes the incident's zone crop a
   * "normal" example of its bin area (never automatic: docs/operations.md says why).
   */
  function teachButton(entry) {
    const view = entry.data;
    if (view.kind !== 'trash_overflow' || view.state !== 'false_alarm') return null;
    return el('button', { type: 'button', dataset: { action: 'normal-example' },
      disabled: entry.pending !== null || entry.taught === true,
      onclick: () => addNormalExample(entry) },
    entry.taught === true ? 'Added as normal example' : 'Add as normal example');
  }

  async function addNormalExample(entry) {
    const view = entry.data;
    entry.pending = 'normal-example';
    scheduleRender();
    try {
      const result = await apiJson(`/api/incidents/${encodeURIComponent(view.incident_id)}/normal-example`,
        { method: 'POST' });
      if (result.ok || result.status === 409 && /already/.test(result.body && result.body.error)) {
        entry.taught = true;
        announce(`Added as a normal example of bin area ${view.zone}: train it in the zone editor`);
      } else {
        showIncidentMessage(`Not added as an example: ${result.body && result.body.error ? result.body.error : `HTTP ${result.status}`}`);
      }
    } catch (error) {
      showIncidentMessage(`Not added as an example: ${error.message}`);
    } finally {
      entry.pending = null;
      entry.row.dataset.signature = '';
      scheduleRender();
    }
  }

  function showIncidentMessage(text) {
    const message = $('incident-message');
    message.textContent = text;
    message.hidden = false;
    announce(text);
  }

  // ---- cameras -----------------------------------------------------------------------------

  function upsertCamera(view) {
    if (!view || typeof view.id !== 'string') return;
    const entry = cameras.get(view.id);
    // A list fetched just before a state change must not undo it: since_ms moves with state.
    if (entry) { if ((view.since_ms || 0) >= (entry.data.since_ms || 0)) entry.data = view; }
    else cameras.set(view.id, { data: view, tile: null, signature: '' });
    scheduleRender();
  }

  // A degraded gateway (incident events held in memory because the outbox's disk refuses
  // them) or a stalled one is said at the top. Polled: it is rare and not a stream event.
  const GATEWAY_POLL_MS = 10000;
  async function loadGateway() {
    const alarm = $('gateway-alarm');
    try {
      const body = await (await fetch('/healthz', { cache: 'no-store' })).json();
      if (body.status === 'degraded') {
        alarm.textContent = `Degraded: ${body.events_held} incident events are held in memory and retried, not yet stored. ${body.degraded || ''}`;
      } else if (body.status === 'stalled') {
        alarm.textContent = 'The gateway has stalled: no frame has been handled for a while.';
      }
      alarm.hidden = body.status === 'ok';
    } catch (error) {
      // The connection indicator already says when the gateway cannot be reached.
    }
  }

  async function loadCameras() {
    const message = $('camera-message');
    try {
      const body = await getJson('/api/cameras');
      const list = Array.isArray(body && body.cameras) ? body.cameras : [];
      const ids = new Set(list.map((view) => view.id));
      for (const [id, entry] of [...cameras]) {
        if (!ids.has(id)) { if (entry.tile) entry.tile.remove(); cameras.delete(id); }
      }
      for (const view of list) upsertCamera(view);
      message.hidden = true;
    } catch (error) {
      message.textContent = `Could not load cameras: ${error.message}`;
      message.hidden = false;
    }
  }

  function cameraMatchesText(view, text) {
    if (!text) return true;
    return [view.id, view.street, view.community, view.grid, view.steward, view.state, view.reason]
      .some((value) => value && String(value).toLowerCase().includes(text));
  }

  function renderCameras() {
    const text = $('camera-filter').value.trim().toLowerCase();
    const counts = { offline: 0, degraded: 0, other: 0, online: 0 };
    const visible = [];
    for (const entry of cameras.values()) {
      const group = cameraGroup(entry.data.state);
      counts[group] += 1;
      if (cameraGroupFilter && group !== cameraGroupFilter) continue;
      if (cameraMatchesText(entry.data, text)) visible.push(entry);
    }
    // Problems first; among them the newest change first, so a fresh outage is at the top.
    visible.sort((a, b) => {
      const ga = GROUP_ORDER[cameraGroup(a.data.state)];
      const gb = GROUP_ORDER[cameraGroup(b.data.state)];
      if (ga !== gb) return ga - gb;
      if (ga !== GROUP_ORDER.online && a.data.since_ms !== b.data.since_ms) {
        return (b.data.since_ms || 0) - (a.data.since_ms || 0);
      }
      return a.data.id.localeCompare(b.data.id);
    });
    for (const entry of visible) updateCameraTile(entry);
    placeInOrder(cameraList, visible.map((entry) => entry.tile));
    $('camera-empty').hidden = visible.length > 0;
    renderSummary(counts);
  }

  function renderSummary(counts) {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const buttons = ['offline', 'degraded', 'other', 'online'].map((group) => el('button', {
      type: 'button', class: `summary-item group-${group}`, dataset: { group },
      'aria-pressed': String(cameraGroupFilter === group),
      title: cameraGroupFilter === group ? 'Show all cameras' : `Show only ${group} cameras`,
      onclick: () => { cameraGroupFilter = cameraGroupFilter === group ? '' : group; scheduleRender(); },
    }, el('span', { class: 'summary-count' }, String(counts[group])), ` ${group}`));
    const summary = $('camera-summary');
    const signature = JSON.stringify([counts, cameraGroupFilter]);
    if (summary.dataset.signature === signature) return;
    summary.dataset.signature = signature;
    summary.replaceChildren(...buttons, el('span', { class: 'summary-total' }, `${total} cameras`));
  }

  function updateCameraTile(entry) {
    const view = entry.data;
    const signature = JSON.stringify([view.state, view.reason, view.since_ms, view.street,
      view.community, view.grid, view.model]);
    if (entry.tile && entry.signature === signature) return;
    entry.signature = signature;
    const group = cameraGroup(view.state);
    const tile = entry.tile || el('li', { class: 'camera' });
    tile.className = `camera group-${group}`;
    tile.dataset.cameraId = view.id;
    tile.dataset.state = view.state;
    tile.dataset.group = group;
    // replaceChildren() would print a null as the text "null": leave the absent parts out.
    tile.replaceChildren(...[
      el('a', { class: 'camera-link', href: `/editor?camera=${encodeURIComponent(view.id)}`,
        title: `${place(view)}${view.model ? ` — model ${view.model} (${view.model_variant})` : ''} — open in the zone editor` },
        el('span', { class: 'camera-id' }, view.id),
        el('span', { class: 'camera-state' }, view.state)),
      el('span', { class: 'camera-since' }, ageElement(view.since_ms, 'since ', ' ago')),
      view.reason ? el('span', { class: 'camera-reason' }, view.reason) : null,
      group === 'online' ? null : el('span', { class: 'camera-place', lang: 'zh' }, place(view)),
    ].filter((child) => child !== null));
    entry.tile = tile;
  }

  // ---- shared rendering helpers ------------------------------------------------------------

  /** Makes `list`'s children exactly `nodes`, in order, moving only what is out of place. */
  function placeInOrder(list, nodes) {
    const wanted = new Set(nodes);
    for (const child of [...list.children]) if (!wanted.has(child)) child.remove();
    let cursor = list.firstElementChild;
    for (const node of nodes) {
      if (node === cursor) { cursor = cursor.nextElementSibling; continue; }
      list.insertBefore(node, cursor);
    }
  }

  /** Fills a filter <select> from values seen in the data, keeping the current choice. */
  function fillSelect(select, values, label = (v) => v) {
    const chosen = select.value;
    const unique = [...new Set(values.filter(Boolean))].sort();
    if (chosen && !unique.includes(chosen)) unique.push(chosen);
    const signature = unique.join('\u0000');
    if (select.dataset.signature === signature) return;
    select.dataset.signature = signature;
    const first = select.options[0];
    select.replaceChildren(first, ...unique.map((value) => el('option', { value }, label(value))));
    select.value = chosen;
  }

  // Many events can arrive in a burst (600 cameras after a network blip): render once a frame.
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderIncidents();
      renderCameras();
    });
  }

  // ---- filters in the URL, so a wall screen reloads into the same view ---------------------

  function restoreFilters() {
    const params = new URLSearchParams(location.search);
    for (const [param, id] of [['grid', 'filter-grid'], ['kind', 'filter-kind']]) {
      const value = params.get(param);
      if (value) $(id).append(el('option', { value }, value));
      if (value) $(id).value = value;
    }
    if (['active', 'open', 'all'].includes(params.get('show'))) $('filter-state').value = params.get('show');
    if (params.get('find')) $('camera-filter').value = params.get('find');
  }

  function saveFilters() {
    const params = new URLSearchParams();
    if ($('filter-grid').value) params.set('grid', $('filter-grid').value);
    if ($('filter-kind').value) params.set('kind', $('filter-kind').value);
    if ($('filter-state').value !== 'active') params.set('show', $('filter-state').value);
    if ($('camera-filter').value.trim()) params.set('find', $('camera-filter').value.trim());
    const query = params.toString();
    history.replaceState(null, '', query ? `/?${query}` : '/');
  }

  // ---- start -------------------------------------------------------------------------------

  function start() {
    setUpOperator();
    restoreFilters();
    for (const id of ['filter-grid', 'filter-kind', 'filter-state']) {
      $(id).addEventListener('change', () => { saveFilters(); scheduleRender(); });
    }
    $('camera-filter').addEventListener('input', () => { saveFilters(); scheduleRender(); });

    loadIncidents();
    loadCameras();
    loadGateway();
    setInterval(loadGateway, GATEWAY_POLL_MS);
    const connection = $('connection');
    Gateway.streamEvents({
      // Also on the first connection: anything that happened between the loads above and
      // the stream opening would otherwise be missed. Stale answers lose to fresher events.
      onOpen: () => { loadIncidents(); loadCameras(); },
      onEvent: (type, data) => {
        if (type === 'incident') upsertIncident(data, true);
        else if (type === 'camera') upsertCamera(data);
        // The gateway lagged behind and dropped events for this stream: read the lists again.
        else if (type === 'resync') { loadIncidents(); loadCameras(); }
      },
      onStatus: (state, seconds) => {
        connection.dataset.state = state;
        connection.textContent = state === 'live' ? 'Live'
          : state === 'retrying' ? `Disconnected, retrying in ${seconds} s` : 'Connecting…';
      },
    });
  }

  start();
})();
