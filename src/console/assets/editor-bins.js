// The zone editor's "teach this bin area" panel (issue 15): the selected bin_area zone's live
// crop with "this looks normal" / "this is overflowing", the gallery of its examples with
// delete, Train (the gateway answers with the cross-validated accuracy) and the zone's live
// reading with its score. Talks to /api/cameras/<id>/bin-zones/<zone>/… (console/bins.rs).
// editor.js calls BinTeacher.show(camera, zone or null, why-not) when the selection changes
// and BinTeacher.refresh() with every frame refresh. Needs common.js (`Gateway`).
'use strict';

const BinTeacher = (() => {
  const { el, apiJson, apiFetch, getJson, fetchImageUrl, ObjectUrlSlot, announce } = Gateway;
  const $ = (id) => document.getElementById(id);

  // `refreshes` numbers each refresh: an older one still in flight never paints over a newer.
  const state = { camera: null, zone: null, frameTms: null, busy: false, examples: [], refreshes: 0 };
  const liveSlot = new ObjectUrlSlot();
  /** example id → object URL of its thumbnail (kept while the zone stays selected) */
  const thumbs = new Map();

  function base() {
    return `/api/cameras/${encodeURIComponent(state.camera)}/bin-zones/${encodeURIComponent(state.zone)}`;
  }

  function setStatus(text) {
    $('bin-status').textContent = text;
    if (text) announce(text);
  }

  function percent(value) { return `${Math.round(value * 1000) / 10} %`; }

  function describeTraining(trained) {
    if (!trained) return 'Not trained yet: the zone reads the generic model.';
    const accuracy = trained.accuracy === null || trained.accuracy === undefined
      ? 'cross-validated accuracy needs 2 examples of each state'
      : `cross-validated accuracy ${percent(trained.accuracy)}`;
    return `Trained on ${trained.examples} examples (${trained.overflowing} overflowing): ${accuracy}, `
      + `${trained.seconds.toFixed(1)} s.`;
  }

  function renderReading(view) {
    const reading = view.reading;
    const node = $('bin-reading');
    if (!reading) {
      node.textContent = 'No reading yet (no frame analysed since the gateway started).';
      node.dataset.reads = '';
      return;
    }
    node.dataset.reads = reading.reads;
    node.dataset.score = String(reading.score);
    node.dataset.source = reading.source;
    node.textContent = `Reads ${reading.reads} — score ${reading.score.toFixed(2)} `
      + `(overflowing from ${view.overflow_share}, normal up to ${view.normal_share}; ${reading.source} model)`;
  }

  function renderGallery(view) {
    const gallery = $('bin-gallery');
    const ids = new Set(view.examples.map((e) => e.id));
    for (const [id, url] of thumbs) {
      if (!ids.has(id)) { URL.revokeObjectURL(url); thumbs.delete(id); }
    }
    const items = [];
    for (const example of view.examples.slice().reverse()) {
      const img = el('img', { alt: `${example.label} example ${example.id}`, width: 96, height: 72 });
      if (thumbs.has(example.id)) img.src = thumbs.get(example.id);
      else {
        fetchImageUrl(`${base()}/examples/${example.id}`).then((url) => {
          if (!url) return;
          thumbs.set(example.id, url);
          img.src = url;
        }).catch(() => {});
      }
      items.push(el('li', { class: `bin-example label-${example.label}`, dataset: { exampleId: example.id,
        label: example.label } },
        img,
        el('span', { class: 'bin-example-label' }, example.label),
        el('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${example.label} example ${example.id}`,
          onclick: () => deleteExample(example.id) }, 'Delete')));
    }
    gallery.replaceChildren(...items);
    $('bin-counts').textContent = `${view.counts.normal} normal, ${view.counts.overflowing} overflowing `
      + `(at most ${view.max_examples})`;
  }

  /** Re-reads the zone; the frame refresh calls it every 5 s (skipped while a change runs). */
  async function refresh(force = false) {
    if (!state.camera || !state.zone || (state.busy && !force)) return;
    const number = ++state.refreshes;
    const current = () => number === state.refreshes;
    try {
      const [view, live] = await Promise.all([getJson(base()), apiFetch(`${base()}/live.jpg`)]);
      const blob = live.ok ? await live.blob() : null;
      if (!current()) return;
      if (blob) {
        state.frameTms = Number(live.headers.get('x-frame-t-ms'));
        const url = URL.createObjectURL(blob);
        $('bin-live').src = url;
        liveSlot.set(url);
        $('bin-live').dataset.loaded = 'true';
      } else {
        state.frameTms = null;
      }
      $('bin-normal').disabled = $('bin-overflowing').disabled = state.busy || state.frameTms === null;
      $('bin-source').textContent = `Model in use: ${view.source}${view.note ? ` — ${view.note}` : ''}`;
      $('bin-train-result').textContent = describeTraining(view.trained);
      renderReading(view);
      state.examples = view.examples;
      renderGallery(view);
      $('bin-panel').dataset.loaded = 'true';
    } catch (error) {
      if (current()) setStatus(`Could not load the bin area: ${error.message}`);
    }
  }

  async function withBusy(work) {
    if (state.busy) return;
    state.busy = true;
    for (const id of ['bin-normal', 'bin-overflowing', 'bin-train']) $(id).disabled = true;
    state.refreshes += 1; // a refresh in flight from before the change is stale
    try { await work(); } finally {
      state.busy = false;
      $('bin-train').disabled = false;
      await refresh(true);
    }
  }

  function addExample(label) {
    return withBusy(async () => {
      const body = { label };
      if (Number.isFinite(state.frameTms)) body.frame_t_ms = state.frameTms;
      const result = await apiJson(`${base()}/examples`, { json: body });
      if (result.ok) {
        const counts = result.body.counts;
        setStatus(`Added as ${label} (${counts.normal} normal, ${counts.overflowing} overflowing).`);
      } else {
        setStatus(`Not added: ${result.body && result.body.error ? result.body.error : `HTTP ${result.status}`}`);
      }
    });
  }

  function deleteExample(id) {
    return withBusy(async () => {
      const result = await apiJson(`${base()}/examples/${id}`, { method: 'DELETE' });
      setStatus(result.ok ? `Example ${id} deleted (train again to use the change).`
        : `Not deleted: ${result.body && result.body.error ? result.body.error : `HTTP ${result.status}`}`);
    });
  }

  function train() {
    return withBusy(async () => {
      setStatus('Training…');
      const result = await apiJson(`${base()}/train`, { method: 'POST' });
      if (result.ok) {
        const body = result.body;
        const applied = body.applied ? 'now in use' : `not in use: ${body.note || 'see the zone\'s source'}`;
        $('bin-train-result').dataset.accuracy = body.trained.accuracy ?? '';
        setStatus(`${describeTraining(body.trained)} The zone's model is ${applied}.`);
      } else {
        setStatus(`Not trained: ${result.body && result.body.error ? result.body.error : `HTTP ${result.status}`}`);
      }
    });
  }

  function forget() {
    return withBusy(async () => {
      const result = await apiJson(`${base()}/model`, { method: 'DELETE' });
      setStatus(result.ok ? `The zone reads the ${result.body.source || 'generic'} model again (examples kept).`
        : `Not done: ${result.body && result.body.error ? result.body.error : `HTTP ${result.status}`}`);
    });
  }

  /** Shows the panel for `zone` of `camera` (null: hides it); `why` replaces it with a note. */
  function show(camera, zone, why) {
    const panel = $('bin-panel');
    if (!panel) return;
    const changed = camera !== state.camera || zone !== state.zone;
    state.camera = camera;
    state.zone = zone;
    panel.hidden = !zone && !why;
    $('bin-note').textContent = why || '';
    $('bin-body').hidden = !zone;
    if (!changed) return;
    state.refreshes += 1; // what is in flight was for the zone before
    for (const url of thumbs.values()) URL.revokeObjectURL(url);
    thumbs.clear();
    liveSlot.clear();
    state.frameTms = null;
    delete panel.dataset.loaded;
    $('bin-gallery').replaceChildren();
    $('bin-status').textContent = '';
    if (zone) {
      $('bin-title').textContent = `Teach bin area ${zone}`;
      refresh();
    }
  }

  function start() {
    if (!$('bin-panel')) return;
    $('bin-normal').addEventListener('click', () => addExample('normal'));
    $('bin-overflowing').addEventListener('click', () => addExample('overflowing'));
    $('bin-train').addEventListener('click', train);
    $('bin-forget').addEventListener('click', forget);
  }

  start();
  return { show, refresh };
})();
