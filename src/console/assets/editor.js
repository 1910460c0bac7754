// The zone editor: a camera's latest analysed frame on a canvas, its detections and zones
// drawn over it, and tools to draw, reshape and parameterise zones, saved for the whole
// camera with `PUT /api/cameras/<id>/zones`. The gateway validates; this page only keeps
// coordinates inside 0–1 and types right. Needs common.js (`Gateway`).
'use strict';

(() => {
  const { el, apiJson, getJson, fetchImageUrl, ObjectUrlSlot, announce, place } = Gateway;

  const FALLBACK_KINDS = ['no_parking', 'bin_area', 'fall_watch', 'mask'];
  const KIND_COLOURS = { no_parking: '#f97316', bin_area: '#16a34a', fall_watch: '#dc2626',
    mask: '#6b7280' };
  const DETECTION_COLOUR = '#06b6d4';
  const ZONE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
  const REFRESH_MS = 5000;

  const $ = (id) => document.getElementById(id);
  const canvas = $('zone-canvas');
  const context = canvas.getContext('2d');

  const cameraId = new URLSearchParams(location.search).get('camera');
  const state = {
    zones: [],            // RawZone objects, edited in place, in the order they are saved
    kinds: [],            // from /api/zone-kinds: [{kind, help, keys:[{key, default, help}]}]
    selected: null,       // the selected zone object
    selectedVertex: null, // index into selected.polygon
    drawing: null,        // {id, kind, points: [[x,y]], hover: [x,y]|null} while drawing
    drag: null,           // {zone, index} while a corner is dragged
    image: null,          // the decoded frame
    detections: null,     // the detections answer for (about) that frame
    savedSignature: '',   // what the gateway holds, to tell unsaved changes
    badParams: new WeakMap(), // zone → Map(key → text that is not a valid value)
    problemZones: new Set(),  // zones named by the last refusal
    savedBinZones: new Set(), // ids of the bin_area zones the gateway holds (can be taught)
  };
  const frameSlot = new ObjectUrlSlot();

  // ---- geometry ----------------------------------------------------------------------------

  const clamp01 = (v) => Math.min(1, Math.max(0, v));
  const round4 = (v) => Math.round(clamp01(v) * 10000) / 10000;

  /** Pointer position in normalised frame coordinates; right even when CSS scales the canvas. */
  function toNorm(event) {
    const rect = canvas.getBoundingClientRect();
    return [clamp01((event.clientX - rect.left) / rect.width),
      clamp01((event.clientY - rect.top) / rect.height)];
  }

  /** Distance between two normalised points in CSS pixels, as the user sees it. */
  function cssDistance(a, b) {
    const rect = canvas.getBoundingClientRect();
    return Math.hypot((a[0] - b[0]) * rect.width, (a[1] - b[1]) * rect.height);
  }

  function hitRadius(event) { return event.pointerType === 'touch' ? 22 : 10; }

  function nearestVertex(polygon, point, radius) {
    let best = null;
    polygon.forEach((vertex, index) => {
      const distance = cssDistance(vertex, point);
      if (distance <= radius && (!best || distance < best.distance)) best = { index, distance };
    });
    return best ? best.index : null;
  }

  function insidePolygon(polygon, [x, y]) {
    let inside = false;
    for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
      const [xi, yi] = polygon[i];
      const [xj, yj] = polygon[j];
      if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  /** Index of the edge (i → i+1) within `radius` CSS px of `point`, or null. */
  function nearestEdge(polygon, point, radius) {
    const rect = canvas.getBoundingClientRect();
    const px = (p) => [p[0] * rect.width, p[1] * rect.height];
    const [x, y] = px(point);
    for (let i = 0; i < polygon.length; i++) {
      const [ax, ay] = px(polygon[i]);
      const [bx, by] = px(polygon[(i + 1) % polygon.length]);
      const lengthSquared = (bx - ax) ** 2 + (by - ay) ** 2 || 1;
      const t = Math.max(0, Math.min(1, ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / lengthSquared));
      if (Math.hypot(x - (ax + t * (bx - ax)), y - (ay + t * (by - ay))) <= radius) return i;
    }
    return null;
  }

  // ---- drawing -----------------------------------------------------------------------------

  let drawQueued = false;
  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => { drawQueued = false; paint(); });
  }

  function paint() {
    const { width, height } = canvas;
    const rect = canvas.getBoundingClientRect();
    // Canvas pixels per CSS pixel, so lines and handles look the same size however it is scaled.
    const unit = rect.width ? width / rect.width : 1;
    context.clearRect(0, 0, width, height);
    if (state.image) {
      context.drawImage(state.image, 0, 0, width, height);
    } else {
      context.fillStyle = '#374151';
      context.fillRect(0, 0, width, height);
      context.fillStyle = '#e5e7eb';
      context.font = `${Math.round(18 * unit)}px system-ui, sans-serif`;
      context.fillText('No analysed frame yet', 20 * unit, 36 * unit);
    }
    context.font = `${Math.round(13 * unit)}px system-ui, sans-serif`;
    context.textBaseline = 'top';

    if (state.detections && $('show-detections').checked) {
      for (const detection of state.detections.detections || []) {
        const [x1, y1, x2, y2] = detection.box_norm || [];
        if (![x1, y1, x2, y2].every(Number.isFinite)) continue;
        context.strokeStyle = DETECTION_COLOUR;
        context.lineWidth = 1.5 * unit;
        context.strokeRect(x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height);
        const score = Number.isFinite(detection.score) ? ` ${detection.score.toFixed(2)}` : '';
        label(`${detection.class}${score}`, x1 * width, y1 * height, DETECTION_COLOUR, unit, true);
      }
    }

    for (const zone of state.zones) {
      const polygon = Array.isArray(zone.polygon) ? zone.polygon : [];
      if (!polygon.length) continue;
      const colour = KIND_COLOURS[zone.kind] || '#2563eb';
      const selected = zone === state.selected;
      path(polygon, true);
      context.fillStyle = colour + (zone.kind === 'mask' ? '66' : selected ? '40' : '26');
      context.fill();
      context.strokeStyle = state.problemZones.has(zone) ? '#facc15' : colour;
      context.lineWidth = (selected ? 3.5 : 2) * unit;
      context.setLineDash(zone.kind === 'mask' ? [6 * unit, 4 * unit] : []);
      context.stroke();
      context.setLineDash([]);
      const top = polygon.reduce((a, b) => (b[1] < a[1] || (b[1] === a[1] && b[0] < a[0]) ? b : a));
      label(`${zone.id} (${zone.kind})`, top[0] * width, top[1] * height, colour, unit, false);
      if (selected) {
        polygon.forEach((vertex, index) => handle(vertex, colour, index === state.selectedVertex, unit));
      }
    }

    if (state.drawing) {
      const { points, hover } = state.drawing;
      const colour = KIND_COLOURS[state.drawing.kind] || '#2563eb';
      if (points.length) {
        path(hover ? points.concat([hover]) : points, false);
        context.strokeStyle = colour;
        context.lineWidth = 2.5 * unit;
        context.setLineDash([8 * unit, 5 * unit]);
        context.stroke();
        context.setLineDash([]);
        // The first corner is drawn larger: clicking it closes the zone.
        points.forEach((vertex, index) => handle(vertex, colour, index === 0, unit, index === 0 ? 9 : 5));
      }
    }
  }

  function path(points, closed) {
    context.beginPath();
    points.forEach(([x, y], index) => {
      const method = index ? 'lineTo' : 'moveTo';
      context[method](x * canvas.width, y * canvas.height);
    });
    if (closed) context.closePath();
  }

  function handle([x, y], colour, filled, unit, radius = 6) {
    context.beginPath();
    context.arc(x * canvas.width, y * canvas.height, radius * unit, 0, Math.PI * 2);
    context.fillStyle = filled ? colour : '#ffffff';
    context.fill();
    context.lineWidth = 2 * unit;
    context.strokeStyle = colour;
    context.stroke();
  }

  function label(text, x, y, colour, unit, above) {
    const padding = 3 * unit;
    const height = 17 * unit;
    const width = context.measureText(text).width + 2 * padding;
    const top = above && y - height >= 0 ? y - height : y;
    const left = Math.min(x, canvas.width - width);
    context.fillStyle = colour;
    context.fillRect(left, top, width, height);
    context.fillStyle = '#ffffff';
    context.fillText(text, left + padding, top + 2 * unit);
  }

  // ---- canvas interaction ------------------------------------------------------------------

  canvas.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    const point = toNorm(event);
    canvas.focus();
    if (state.drawing) {
      const { points } = state.drawing;
      if (points.length >= 3 && cssDistance(points[0], point) <= hitRadius(event) + 4) finishDrawing();
      else { points.push(point); updateDrawingControls(); }
      draw();
      return;
    }
    // A corner of the selected zone first, then of any zone (topmost = last drawn), then
    // the inside of any zone selects it.
    const candidates = state.selected ? [state.selected, ...state.zones.slice().reverse()]
      : state.zones.slice().reverse();
    for (const zone of candidates) {
      const index = nearestVertex(zone.polygon || [], point, hitRadius(event));
      if (index !== null) {
        select(zone, index);
        state.drag = { zone, index };
        canvas.setPointerCapture(event.pointerId);
        return;
      }
    }
    const inside = state.zones.slice().reverse().find((zone) => insidePolygon(zone.polygon || [], point));
    select(inside || null, null);
  });

  canvas.addEventListener('pointermove', (event) => {
    const point = toNorm(event);
    if (state.drag) {
      state.drag.zone.polygon[state.drag.index] = point;
      changed(false);
    } else if (state.drawing) {
      state.drawing.hover = point;
      draw();
    } else {
      const over = state.zones.some((zone) => nearestVertex(zone.polygon || [], point, hitRadius(event)) !== null);
      canvas.style.cursor = over ? 'move' : 'crosshair';
    }
  });

  const endDrag = () => { if (state.drag) { state.drag = null; changed(true); } };
  canvas.addEventListener('pointerup', endDrag);
  canvas.addEventListener('pointercancel', endDrag);
  canvas.addEventListener('pointerleave', () => { if (state.drawing) { state.drawing.hover = null; draw(); } });

  // Right-click: while drawing, take back the last corner; otherwise delete the corner under it.
  canvas.addEventListener('contextmenu', (event) => {
    event.preventDefault();
    if (state.drawing) {
      state.drawing.points.pop();
      updateDrawingControls();
      draw();
      return;
    }
    const point = toNorm(event);
    for (const zone of state.zones.slice().reverse()) {
      const index = nearestVertex(zone.polygon || [], point, hitRadius(event));
      if (index !== null) { select(zone, index); deleteVertex(); return; }
    }
  });

  // Double-click on an edge of the selected zone adds a corner there.
  canvas.addEventListener('dblclick', (event) => {
    const zone = state.selected;
    if (state.drawing || !zone) return;
    const point = toNorm(event);
    const edge = nearestEdge(zone.polygon, point, hitRadius(event));
    if (edge === null || nearestVertex(zone.polygon, point, hitRadius(event)) !== null) return;
    zone.polygon.splice(edge + 1, 0, point);
    select(zone, edge + 1);
    changed(true);
  });

  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && state.drawing) {
      event.preventDefault();
      cancelDrawing();
      return;
    }
    if (document.activeElement !== canvas) return;
    if (event.key === 'Enter' && state.drawing) { event.preventDefault(); finishDrawing(); return; }
    if ((event.key === 'Delete' || event.key === 'Backspace') && state.selectedVertex !== null) {
      event.preventDefault();
      deleteVertex();
      return;
    }
    const step = event.shiftKey ? 0.02 : 0.004;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key] && state.selected && state.selectedVertex !== null) {
      event.preventDefault();
      const vertex = state.selected.polygon[state.selectedVertex];
      state.selected.polygon[state.selectedVertex] =
        [clamp01(vertex[0] + moves[event.key][0]), clamp01(vertex[1] + moves[event.key][1])];
      changed(true);
    }
  });

  // ---- zone operations ---------------------------------------------------------------------

  function select(zone, vertex) {
    const zoneChanged = zone !== state.selected;
    state.selected = zone;
    state.selectedVertex = zone ? vertex : null;
    $('vertex-delete').disabled = state.selectedVertex === null;
    if (zoneChanged) { renderZoneList(); renderZonePanel(); }
    draw();
  }

  function deleteVertex() {
    const zone = state.selected;
    if (!zone || state.selectedVertex === null) return;
    if (zone.polygon.length <= 3) {
      announce('A zone needs at least 3 corners; delete the zone instead.');
      $('zone-new-status').textContent = `Zone ${zone.id} needs at least 3 corners; use Delete zone instead.`;
      return;
    }
    zone.polygon.splice(state.selectedVertex, 1);
    select(zone, null);
    changed(true);
  }

  function startDrawing(event) {
    event.preventDefault();
    const status = $('zone-new-status');
    const id = $('zone-id').value.trim();
    const kind = $('zone-kind').value;
    status.textContent = '';
    if (!ZONE_ID_PATTERN.test(id)) {
      status.textContent = 'The id must be 1–64 letters, digits, - or _.';
      $('zone-id').focus();
      return;
    }
    if (state.zones.some((zone) => zone.id === id)) {
      status.textContent = `This camera already has a zone "${id}".`;
      $('zone-id').focus();
      return;
    }
    select(null, null);
    state.drawing = { id, kind, points: [], hover: null };
    updateDrawingControls();
    announce(`Drawing zone ${id}: click on the picture to add corners.`);
    canvas.focus();
    draw();
  }

  function finishDrawing() {
    const drawing = state.drawing;
    if (!drawing) return;
    if (drawing.points.length < 3) {
      $('zone-new-status').textContent = 'A zone needs at least 3 corners.';
      return;
    }
    const zone = { id: drawing.id, kind: drawing.kind, polygon: drawing.points };
    state.zones.push(zone);
    state.drawing = null;
    $('zone-id').value = '';
    updateDrawingControls();
    select(zone, null);
    renderZoneList();
    changed(true);
    announce(`Zone ${zone.id} added; save to apply it.`);
  }

  function cancelDrawing() {
    state.drawing = null;
    updateDrawingControls();
    announce('Drawing cancelled.');
    draw();
  }

  function updateDrawingControls() {
    const drawing = state.drawing;
    $('draw-help').hidden = !drawing;
    $('zone-close').disabled = !drawing || drawing.points.length < 3;
    $('zone-cancel').disabled = !drawing;
    canvas.classList.toggle('drawing', Boolean(drawing));
  }

  function deleteZone() {
    const zone = state.selected;
    if (!zone) return;
    state.zones = state.zones.filter((other) => other !== zone);
    state.problemZones.delete(zone);
    select(null, null);
    renderZoneList();
    changed(true);
    announce(`Zone ${zone.id} deleted; save to apply it.`);
  }

  // ---- lists and forms ---------------------------------------------------------------------

  function renderZoneList() {
    const list = $('zone-list');
    list.replaceChildren(...state.zones.map((zone) => el('li', {
      class: ['zone-item', zone === state.selected && 'selected', state.problemZones.has(zone) && 'has-problem']
        .filter(Boolean).join(' '),
      dataset: { zoneId: zone.id, kind: zone.kind },
    }, el('button', { type: 'button', 'aria-pressed': String(zone === state.selected),
      onclick: () => select(zone === state.selected ? null : zone, null) },
    el('span', { class: `swatch kind-${zone.kind}`, 'aria-hidden': 'true' }),
    el('span', { class: 'zone-name' }, zone.id),
    el('small', {}, ` ${zone.kind} · ${(zone.polygon || []).length} corners`)))));
    $('zone-list-empty').hidden = state.zones.length > 0;
  }

  function kindInfo(kind) { return state.kinds.find((info) => info.kind === kind); }

  function fillKindSelect(select, current) {
    const kinds = state.kinds.length ? state.kinds.map((info) => info.kind) : FALLBACK_KINDS;
    const options = kinds.includes(current) || !current ? kinds : kinds.concat([current]);
    select.replaceChildren(...options.map((kind) => el('option', { value: kind }, kind)));
    if (current) select.value = current;
  }

  /** The type of a parameter: the server's `type` if it gives one, else from its default. */
  function keyType(info) {
    const declared = String(info.type || '').toLowerCase();
    if (['number', 'integer', 'float'].includes(declared)) return 'number';
    if (['bool', 'boolean'].includes(declared)) return 'bool';
    if (['list', 'array', 'strings'].includes(declared)) return 'list';
    if (declared === 'string') return 'string';
    const value = info.default;
    if (Array.isArray(value) || info.key === 'classes') return 'list';
    if (typeof value === 'boolean') return 'bool';
    if (typeof value === 'number') return 'number';
    if (value === null || value === undefined) {
      if (/_(ms|share|count|area|score|ratio|aspect)$/.test(info.key)) return 'number';
      if (/^(rotated_pass)$/.test(info.key)) return 'bool';
    }
    return 'string';
  }

  function defaultText(value) {
    if (value === null || value === undefined) return 'none';
    return Array.isArray(value) ? value.join(', ') : String(value);
  }

  /** The "teach this bin area" panel (editor-bins.js) follows the selected zone. */
  function showBinTeacher() {
    if (typeof BinTeacher === 'undefined') return;
    const zone = state.selected;
    if (!zone || zone.kind !== 'bin_area') BinTeacher.show(cameraId, null, '');
    else if (!state.savedBinZones.has(zone.id)) {
      BinTeacher.show(cameraId, null, 'Save the zones first: then this bin area can be taught from its live crop.');
    } else BinTeacher.show(cameraId, zone.id, '');
  }

  function rememberSavedBinZones(zones) {
    state.savedBinZones = new Set(zones.filter((z) => z.kind === 'bin_area').map((z) => z.id));
  }

  function renderZonePanel() {
    const zone = state.selected;
    showBinTeacher();
    $('zone-panel').hidden = !zone;
    if (!zone) return;
    $('zone-panel-title').textContent = `Zone ${zone.id}`;
    fillKindSelect($('zone-edit-kind'), zone.kind);
    const info = kindInfo(zone.kind);
    $('zone-kind-help').textContent = info ? info.help || '' : 'No parameter list for this kind.';
    const form = $('zone-params');
    const bad = state.badParams.get(zone) || new Map();
    const keys = info ? info.keys.filter((k) => !['id', 'kind', 'polygon'].includes(k.key)) : [];
    const fields = keys.map((keyInfo) => paramField(zone, keyInfo, bad));
    // Keys this page does not know for the kind are kept as they are; the gateway says if wrong.
    const known = new Set(['id', 'kind', 'polygon', ...keys.map((k) => k.key)]);
    const others = Object.keys(zone).filter((key) => !known.has(key));
    if (others.length) {
      const text = others.map((key) => `${key} = ${JSON.stringify(zone[key])}`).join(', ');
      fields.push(el('p', { class: 'help' }, `Also set: ${text}`));
    }
    form.replaceChildren(...fields);
  }

  function paramField(zone, keyInfo, bad) {
    const { key } = keyInfo;
    const type = keyType(keyInfo);
    const id = `param-${key}`;
    const value = zone[key];
    let input;
    if (type === 'bool') {
      input = el('select', { id, name: key, 'aria-describedby': `${id}-help` },
        el('option', { value: '' }, `default (${defaultText(keyInfo.default)})`),
        el('option', { value: 'true' }, 'true'), el('option', { value: 'false' }, 'false'));
      input.value = value === true ? 'true' : value === false ? 'false' : '';
    } else {
      const shown = bad.has(key) ? bad.get(key)
        : value === undefined ? '' : Array.isArray(value) ? value.join(', ') : String(value);
      input = el('input', { id, name: key, type: 'text', value: shown, autocomplete: 'off',
        inputmode: type === 'number' ? 'decimal' : null, spellcheck: 'false',
        placeholder: defaultText(keyInfo.default), 'aria-describedby': `${id}-help`,
        'aria-invalid': bad.has(key) ? 'true' : null });
    }
    input.addEventListener(type === 'bool' ? 'change' : 'input', () => setParam(zone, key, type, input));
    return el('div', { class: 'param' },
      el('label', { for: id }, key),
      input,
      el('small', { id: `${id}-help` }, keyInfo.help || ''));
  }

  /** Field → zone: empty means "default" (key left out); numbers, lists and booleans typed. */
  function setParam(zone, key, type, input) {
    const text = input.value.trim();
    const bad = state.badParams.get(zone) || new Map();
    state.badParams.set(zone, bad);
    bad.delete(key);
    input.removeAttribute('aria-invalid');
    if (text === '') delete zone[key];
    else if (type === 'bool') zone[key] = text === 'true';
    else if (type === 'list') zone[key] = text.split(/[\s,]+/).filter(Boolean);
    else if (type === 'number') {
      const number = Number(text);
      if (Number.isFinite(number)) zone[key] = number;
      else { bad.set(key, input.value); input.setAttribute('aria-invalid', 'true'); }
    } else zone[key] = text;
    changed(false);
  }

  function changeKind() {
    const zone = state.selected;
    const kind = $('zone-edit-kind').value;
    if (!zone || zone.kind === kind) return;
    // Parameters of the old kind would be refused for the new one, so they go.
    const info = kindInfo(zone.kind);
    for (const keyInfo of info ? info.keys : []) {
      if (!['id', 'kind', 'polygon'].includes(keyInfo.key)) delete zone[keyInfo.key];
    }
    state.badParams.delete(zone);
    zone.kind = kind;
    renderZoneList();
    renderZonePanel();
    changed(true);
  }

  // ---- saving ------------------------------------------------------------------------------

  function payload() {
    return { zones: state.zones.map(({ id, kind, polygon, ...rest }) =>
      ({ id, kind, polygon: (polygon || []).map(([x, y]) => [round4(x), round4(y)]), ...rest })) };
  }

  function signature() { return JSON.stringify(payload()); }

  /** After any edit: redraw, and when `lists` also refresh the zone list; track unsaved work. */
  function changed(lists) {
    if (lists) renderZoneList();
    const dirty = signature() !== state.savedSignature;
    $('dirty-flag').textContent = dirty ? 'Unsaved changes' : '';
    draw();
  }

  async function save() {
    const status = $('save-status');
    status.className = 'save-status';
    if (state.drawing) {
      status.textContent = 'Not saved: finish or cancel the zone being drawn first.';
      status.classList.add('error');
      return;
    }
    const invalid = [];
    state.zones.forEach((zone, index) => {
      for (const [key, text] of state.badParams.get(zone) || []) {
        invalid.push({ path: `zones[${index}].${key}`, message: `"${text}" is not a number` });
      }
    });
    if (invalid.length) {
      status.textContent = `Not saved: fix these first:\n${invalid.map((p) => `${p.path}: ${p.message}`).join('\n')}`;
      status.classList.add('error');
      markProblems(invalid);
      renderZoneList();
      draw();
      return;
    }
    const body = payload();
    const sentSignature = JSON.stringify(body);
    const button = $('zones-save');
    button.disabled = true;
    status.textContent = 'Saving…';
    try {
      const result = await apiJson(`/api/cameras/${encodeURIComponent(cameraId)}/zones`,
        { method: 'PUT', json: body });
      if (result.ok) {
        state.savedSignature = sentSignature;
        rememberSavedBinZones(body.zones);
        state.problemZones.clear();
        const backup = result.body && result.body.backup ? ` The previous file was kept as ${result.body.backup}.` : '';
        status.textContent = `Saved ${body.zones.length} zone${body.zones.length === 1 ? '' : 's'}.${backup}`;
        status.classList.add('ok');
      } else if (result.status === 422) {
        // Exactly "Refused:" and the problems, one per line; the local edits stay to be fixed.
        const problems = result.body && Array.isArray(result.body.problems) ? result.body.problems : [];
        const lines = problems.length ? problems.map((p) => `${p.path}: ${p.message}`)
          : [result.body && result.body.error ? result.body.error : 'no reason given'];
        status.textContent = `Refused:\n${lines.join('\n')}`;
        status.classList.add('error');
        markProblems(problems);
      } else {
        const why = result.body && result.body.error ? result.body.error : 'no reason given';
        status.textContent = `Not saved: HTTP ${result.status}: ${why}`;
        status.classList.add('error');
      }
    } catch (error) {
      status.textContent = `Not saved: ${error.message}`;
      status.classList.add('error');
    } finally {
      button.disabled = false;
      renderZoneList();
      changed(false);
      showBinTeacher();
    }
  }

  /** Outlines the zones a refusal names (paths like `zones[1].polygon`). */
  function markProblems(problems) {
    state.problemZones.clear();
    for (const problem of problems) {
      const match = /zones\[(\d+)\]/.exec(problem.path || '');
      if (match && state.zones[Number(match[1])]) state.problemZones.add(state.zones[Number(match[1])]);
    }
  }

  // ---- frame -------------------------------------------------------------------------------

  let frameLoading = false;
  async function loadFrame() {
    if (frameLoading) return;
    frameLoading = true;
    const status = $('frame-status');
    const base = `/api/cameras/${encodeURIComponent(cameraId)}`;
    try {
      const [url, detections] = await Promise.all([
        fetchImageUrl(`${base}/frame.jpg`),
        apiJson(`${base}/detections`).catch(() => null),
      ]);
      if (url) {
        const image = new Image();
        image.src = url;
        await image.decode();
        frameSlot.set(url);
        state.image = image;
        if (canvas.width !== image.naturalWidth || canvas.height !== image.naturalHeight) {
          canvas.width = image.naturalWidth;
          canvas.height = image.naturalHeight;
          canvas.parentElement.style.setProperty('--frame-aspect', String(image.naturalWidth / image.naturalHeight));
        }
        const count = detections && detections.ok ? (detections.body.detections || []).length : null;
        status.textContent = `Frame of ${new Date().toLocaleTimeString(undefined, { hour12: false })}`
          + (count === null ? '' : `, ${count} detection${count === 1 ? '' : 's'}`);
      } else {
        status.textContent = 'No analysed frame yet';
      }
      state.detections = detections && detections.ok ? detections.body : null;
      paint();
      if (state.image) canvas.dataset.frameLoaded = 'true';
      if (typeof BinTeacher !== 'undefined') BinTeacher.refresh();
    } catch (error) {
      status.textContent = `Frame not loaded: ${error.message}`;
    } finally {
      frameLoading = false;
    }
  }

  // ---- start -------------------------------------------------------------------------------

  async function showPicker(message) {
    $('picker').hidden = false;
    if (message) { $('page-message').textContent = message; $('page-message').hidden = false; }
    const list = $('picker-list');
    let cameras = [];
    try {
      cameras = (await getJson('/api/cameras')).cameras || [];
    } catch (error) {
      list.replaceChildren(el('li', { class: 'message' }, `Could not load cameras: ${error.message}`));
      return;
    }
    cameras.sort((a, b) => a.id.localeCompare(b.id));
    const render = () => {
      const text = $('picker-filter').value.trim().toLowerCase();
      list.replaceChildren(...cameras
        .filter((c) => !text || `${c.id} ${place(c)}`.toLowerCase().includes(text))
        .map((c) => el('li', { dataset: { cameraId: c.id, state: c.state } },
          el('a', { href: `/editor?camera=${encodeURIComponent(c.id)}` },
            el('strong', {}, c.id), ' ', el('span', { lang: 'zh' }, place(c)),
            ` · ${c.zones ?? '?'} zones · ${c.state}`))));
    };
    $('picker-filter').addEventListener('input', render);
    render();
  }

  async function start() {
    if (!cameraId) { showPicker(); return; }
    document.title = `Zones of ${cameraId}`;
    let camera;
    try {
      const [view, kinds] = await Promise.all([
        getJson(`/api/cameras/${encodeURIComponent(cameraId)}`),
        getJson('/api/zone-kinds').catch(() => ({ kinds: [] })),
      ]);
      camera = view;
      state.kinds = Array.isArray(kinds.kinds) ? kinds.kinds : [];
    } catch (error) {
      showPicker(error.status === 404 ? `There is no camera "${cameraId}".`
        : `Could not load camera: ${error.message}`);
      return;
    }
    $('camera-title').textContent = `${camera.id} — ${place(camera)} (${camera.state})`;
    // A key set to null means the same as a key left out (serde's Option): drop it, so the
    // form shows the default and the "Also set" list stays honest.
    state.zones = (Array.isArray(camera.zones) ? camera.zones : []).map((zone) =>
      Object.fromEntries(Object.entries(structuredClone(zone)).filter(([, value]) => value !== null)));
    state.savedSignature = signature();
    rememberSavedBinZones(state.zones);
    $('editor').hidden = false;
    fillKindSelect($('zone-kind'), 'no_parking');

    $('zone-new-form').addEventListener('submit', startDrawing);
    $('zone-close').addEventListener('click', finishDrawing);
    $('zone-cancel').addEventListener('click', cancelDrawing);
    $('zone-delete').addEventListener('click', deleteZone);
    $('vertex-delete').addEventListener('click', deleteVertex);
    $('zone-edit-kind').addEventListener('change', changeKind);
    $('zones-save').addEventListener('click', save);
    $('frame-refresh').addEventListener('click', loadFrame);
    $('show-detections').addEventListener('change', draw);
    window.addEventListener('resize', draw);
    window.addEventListener('beforeunload', (event) => {
      if (signature() !== state.savedSignature) event.preventDefault();
    });
    setInterval(() => {
      if ($('auto-refresh').checked && !document.hidden) loadFrame();
    }, REFRESH_MS);

    renderZoneList();
    renderZonePanel();
    changed(false);
    loadFrame();
  }

  start();
})();
