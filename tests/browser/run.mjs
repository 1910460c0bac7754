#!/usr/bin/env node
// Browser test driver for the operator console and the zone editor: drives Debian's Chromium
// with playwright-core against a running gateway. See README.md for how to run it by hand.
//
//   node tests/browser/run.mjs console|editor|bins|clip|selfcheck    (or --self-check)
//
// Environment: GATEWAY_URL (default http://127.0.0.1:8080), GATEWAY_TOKEN, CAMERA (default
// pavement-demo), ARTEFACT_DIR (screenshots; default tests/artifacts/browser), CHROMIUM_PATH
// (default /usr/bin/chromium), NEW_ZONE_ID (default drawn), NEW_ZONE_DWELL_MS (default 2000),
// WAIT_TIMEOUT_MS (default 60000: for the incident, or the editor's first frame, to appear),
// REQUIRE_LIVE=1 (the incident must not be on the page yet when it has loaded), BIN_ZONE (the
// bin_area zone the `bins` scenario teaches; default bins).
//
// Exit 0 on success, 1 on failure (the reason on stderr), 2 on a usage error. Either way the
// last line on stdout is one JSON object with what was observed (and "error" on failure).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const env = process.env;
const config = {
  gatewayUrl: (env.GATEWAY_URL || 'http://127.0.0.1:8080').replace(/\/+$/, ''),
  token: env.GATEWAY_TOKEN || '',
  camera: env.CAMERA || 'pavement-demo',
  artefactDir: path.resolve(env.ARTEFACT_DIR || path.join(here, '..', 'artifacts', 'browser')),
  chromiumPath: env.CHROMIUM_PATH || '/usr/bin/chromium',
  newZoneId: env.NEW_ZONE_ID || 'drawn',
  newZoneDwellMs: Number(env.NEW_ZONE_DWELL_MS || 2000),
  waitTimeoutMs: Number(env.WAIT_TIMEOUT_MS || 60000),
  requireLive: env.REQUIRE_LIVE === '1',
  binZone: env.BIN_ZONE || 'bins',
};
const DESKTOP = { width: 1920, height: 1080 };
const PHONE = { width: 390, height: 844 };

const observed = {};
const pageProblems = []; // console errors and uncaught exceptions from the pages
let currentPage = null;  // for the failure screenshot

const progress = (text) => process.stderr.write(`• ${text}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Failure extends Error {}
function check(condition, message) { if (!condition) throw new Failure(message); }

/** A CSS attribute value, quoted: incident ids contain ':' and may contain anything else. */
function cssString(value) { return `"${String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`; }

// ---- browser -------------------------------------------------------------------------------

async function launch() {
  check(fs.existsSync(config.chromiumPath), `no Chromium at ${config.chromiumPath} (set CHROMIUM_PATH)`);
  // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
  return chromium.launch({ executablePath: config.chromiumPath, args: ['--no-sandbox'] });
}

async function openPage(browser, viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    // Chromium logs every 4xx answer to fetch() as an error; these ones the pages expect
    // (token asked for, no frame yet, a refused save) and handle.
    if (/^Failed to load resource: the server responded with a status of (401|403|404|422)\b/.test(text)) return;
    pageProblems.push(`console error: ${text}`);
  });
  page.on('pageerror', (error) => pageProblems.push(`uncaught exception: ${error.message}`));
  currentPage = page;
  return page;
}

async function screenshot(page, name) {
  const file = path.join(config.artefactDir, name);
  await page.screenshot({ path: file });
  progress(`screenshot ${file}`);
  return file;
}

/**
 * If the page shows the token form, fills it in with GATEWAY_TOKEN. The gateway refuses
 * camera and incident data without the token (issue 11), so the form comes at the first load;
 * it may also come at any later time a request is refused.
 */
async function serviceTokenForm(page) {
  const input = page.locator('#token-input');
  if (!(await input.isVisible().catch(() => false))) return;
  check(config.token, 'the page asks for a token but GATEWAY_TOKEN is not set');
  check((observed.token_form_used || 0) < 3, 'the gateway keeps refusing GATEWAY_TOKEN');
  progress('token form shown: entering GATEWAY_TOKEN');
  await input.fill(config.token);
  await page.locator('#token-save').click();
  observed.token_form_used = (observed.token_form_used || 0) + 1;
}

/** Polls `probe` (async, truthy when done) every 250 ms, answering the token form meanwhile. */
async function waitUntil(page, what, timeoutMs, probe) {
  progress(`waiting for ${what}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await serviceTokenForm(page);
    const result = await probe();
    if (result) return result;
    if (Date.now() > deadline) {
      throw new Failure(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    }
    await sleep(250);
  }
}

/** The gateway's API from Node, to check what it really holds (not what the page shows). */
async function apiGet(pathname) {
  const headers = config.token ? { Authorization: `Bearer ${config.token}` } : {};
  const response = await fetch(`${config.gatewayUrl}${pathname}`, { headers });
  check(response.ok, `GET ${pathname} answered HTTP ${response.status}`);
  return response.json();
}

// ---- scenarios -----------------------------------------------------------------------------

async function selfcheck(browser) {
  const page = await openPage(browser, { width: 800, height: 600 });
  await page.goto('data:text/html,<title>selfcheck</title><h1 id="ok">browser works</h1>');
  check((await page.textContent('#ok')) === 'browser works', 'the data: page did not render');
  observed.selfcheck = 'ok';
  observed.browser_version = browser.version();
}

async function consoleScenario(browser) {
  const page = await openPage(browser, DESKTOP);
  await page.goto(`${config.gatewayUrl}/`);
  // Lost on a reload: proves the incident came in live.
  await page.evaluate(() => { window.__sameDocument = true; });
  await waitUntil(page, 'the event stream to connect and the incidents to load', 30000,
    async () => (await page.locator('#connection[data-state="live"]').count())
      && (await page.locator('#incident-list[data-loaded="true"]').count()));
  // The page read with the session cookie it got for the token: HttpOnly (scripts cannot
  // read it), SameSite=Strict (no other site's page sends it).
  const session = (await page.context().cookies()).find((cookie) => cookie.name === 'gateway_session');
  check(session, 'no gateway_session cookie after the token was entered');
  observed.session_cookie = { httpOnly: session.httpOnly, sameSite: session.sameSite };
  observed.token_form_used_at_load = observed.token_form_used || 0;
  // Incidents already listed now were not "live": REQUIRE_LIVE wants one that comes later.
  const atLoad = new Set(await page.locator('li.incident').evaluateAll(
    (rows) => rows.map((row) => row.dataset.incidentId)));

  const rowsForCamera = `li.incident[data-camera=${cssString(config.camera)}]`;
  const openRow = `${rowsForCamera}[data-state="open"]`;
  const incidentId = await waitUntil(page, `an open incident of camera ${config.camera}`,
    config.waitTimeoutMs, async () => {
      const row = page.locator(openRow).first();
      return (await row.count()) ? row.getAttribute('data-incident-id') : null;
    });
  const row = page.locator(`li.incident[data-incident-id=${cssString(incidentId)}]`);
  observed.incident_id = incidentId;
  observed.state_before = await row.getAttribute('data-state');
  // "event": pushed by the event stream; "list": fetched (at load, or after a reconnect).
  observed.arrived_by = await row.getAttribute('data-arrived');
  observed.on_page_at_load = atLoad.has(incidentId);
  const when = observed.on_page_at_load ? 'on the page at load' : 'arrived live';
  progress(`incident ${incidentId} (${when}, by ${observed.arrived_by})`);
  if (config.requireLive) {
    check(!observed.on_page_at_load, `incident ${incidentId} was on the page at load, not live (REQUIRE_LIVE=1)`);
  }

  await screenshot(page, 'console.png');
  await page.setViewportSize(PHONE);
  await row.scrollIntoViewIfNeeded();
  await screenshot(page, 'console-phone.png');
  // The phone layout must not scroll sideways.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the phone layout is ${overflow} px wider than the screen`);
  await page.setViewportSize(DESKTOP);

  await row.locator('button[data-action="ack"]').click();
  observed.state_after = await waitUntil(page, `incident ${incidentId} to be acknowledged`, 30000,
    async () => {
      const stateNow = await row.getAttribute('data-state');
      return stateNow === 'acknowledged' ? stateNow : null;
    });
  check(await page.evaluate(() => window.__sameDocument === true), 'the page reloaded during the test');
}

/**
 * The incident card plays its clip inline (issue 16): waits for an incident of $CAMERA whose
 * card has a clip player, waits (from Node) until the gateway has written the clip, presses
 * play in the card and waits until the video really advances; screenshots `console-clip.png`.
 * The operator's name is set first (OPERATOR_NAME), so the gateway's access log can name them.
 */
async function clipScenario(browser) {
  const page = await openPage(browser, DESKTOP);
  const operator = env.OPERATOR_NAME || 'browser operator';
  await page.context().addInitScript((name) => localStorage.setItem('gateway.operator', name), operator);
  await page.goto(`${config.gatewayUrl}/`);
  await waitUntil(page, 'the incidents to load', 30000,
    async () => page.locator('#incident-list[data-loaded="true"]').count());
  const card = `li.incident[data-camera=${cssString(config.camera)}]`;
  const incidentId = await waitUntil(page, `an incident of camera ${config.camera} with a clip player`,
    config.waitTimeoutMs, async () => {
      const row = page.locator(`${card}:has(video[data-clip-for])`).first();
      return (await row.count()) ? row.getAttribute('data-incident-id') : null;
    });
  observed.incident_id = incidentId;
  const clipPath = `/api/incidents/${encodeURIComponent(incidentId)}/clip.mp4`;
  await waitUntil(page, 'the gateway to write the clip (post-roll)', config.waitTimeoutMs, async () => {
    const response = await fetch(`${config.gatewayUrl}${clipPath}`,
      { headers: { Authorization: `Bearer ${config.token}`, Range: 'bytes=0-0' } });
    return response.status === 206;
  });
  const video = page.locator(`li.incident[data-incident-id=${cssString(incidentId)}] video[data-clip-for]`);
  await video.scrollIntoViewIfNeeded();
  await video.evaluate((element) => element.play());
  observed.clip = await waitUntil(page, 'the clip to play in the card', 30000, async () => {
    const state = await video.evaluate((element) => ({
      current_time: element.currentTime, duration: element.duration, ready_state: element.readyState,
      video_width: element.videoWidth, video_height: element.videoHeight, error: element.error && element.error.code,
    }));
    check(!state.error, `the clip failed to play (MediaError ${state.error})`);
    return state.current_time > 1 && state.ready_state >= 2 ? state : null;
  });
  observed.operator = operator;
  progress(`clip played to ${observed.clip.current_time.toFixed(1)} s of ${observed.clip.duration.toFixed(1)} s`);
  await screenshot(page, 'console-clip.png');
}

/** Clicks the canvas at normalised points (0–1 of its on-screen box). */
async function clickCanvas(page, points) {
  const box = await page.locator('#zone-canvas').boundingBox();
  check(box && box.width > 50, 'the zone canvas is not on screen');
  for (const [x, y] of points) {
    await page.mouse.click(box.x + x * box.width, box.y + y * box.height);
  }
}

/** Removes a zone left by an earlier run, so the scenario can draw it afresh. */
async function deleteZoneIfPresent(page, zoneId) {
  const item = page.locator(`#zone-list [data-zone-id=${cssString(zoneId)}] button`);
  if (!(await item.count())) return;
  progress(`deleting zone ${zoneId} left by an earlier run`);
  if ((await item.getAttribute('aria-pressed')) !== 'true') await item.click();
  await page.locator('#zone-delete').click();
}

async function startZone(page, zoneId, kind) {
  await page.locator('#zone-id').fill(zoneId);
  await page.locator('#zone-kind').selectOption(kind);
  await page.locator('#zone-new').click();
  const status = (await page.locator('#zone-new-status').textContent()).trim();
  check(!status, `the editor would not start zone ${zoneId}: ${status}`);
}

async function saveAndWait(page, what, probe) {
  await page.locator('#zones-save').click();
  return waitUntil(page, what, 30000, async () => {
    const text = (await page.locator('#save-status').textContent()) || '';
    return probe(text) ? text : null;
  });
}

async function editorScenario(browser) {
  const { camera, newZoneId, newZoneDwellMs } = config;
  const page = await openPage(browser, DESKTOP);
  await page.goto(`${config.gatewayUrl}/editor?camera=${encodeURIComponent(camera)}`);
  await waitUntil(page, `a frame of ${camera} on the canvas`, config.waitTimeoutMs,
    () => page.locator('#zone-canvas[data-frame-loaded="true"]').count());

  await deleteZoneIfPresent(page, newZoneId);
  await deleteZoneIfPresent(page, 'bad');

  // A rectangle over the middle of the picture, closed by clicking its first corner again.
  const rectangle = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]];
  await startZone(page, newZoneId, 'no_parking');
  await clickCanvas(page, [...rectangle, rectangle[0]]);
  await page.locator(`#zone-list [data-zone-id=${cssString(newZoneId)}]`).waitFor({ timeout: 5000 });
  check((await page.locator('#zone-panel-title').textContent()) === `Zone ${newZoneId}`,
    `zone ${newZoneId} is not selected after closing it`);
  await page.locator('#param-dwell_ms').fill(String(newZoneDwellMs));
  const saved = await saveAndWait(page, '"Saved" in the save status', (text) => /Saved|Refused|Not saved/.test(text));
  check(saved.includes('Saved'), `saving zone ${newZoneId} failed: ${saved}`);
  await screenshot(page, 'editor.png');

  // What the gateway holds now, not what the page believes.
  const afterSave = await apiGet(`/api/cameras/${encodeURIComponent(camera)}`);
  const zone = (afterSave.zones || []).find((z) => z.id === newZoneId);
  check(zone, `after "Saved", GET /api/cameras/${camera} has no zone ${newZoneId}`);
  check(zone.kind === 'no_parking', `zone ${newZoneId} has kind ${zone.kind}`);
  check(zone.dwell_ms === newZoneDwellMs,
    `zone ${newZoneId} has dwell_ms ${JSON.stringify(zone.dwell_ms)}, expected ${newZoneDwellMs}`);
  check(Array.isArray(zone.polygon) && zone.polygon.length === 4
    && zone.polygon.every(([x, y], i) => Math.abs(x - rectangle[i][0]) < 0.01 && Math.abs(y - rectangle[i][1]) < 0.01),
  `zone ${newZoneId} has polygon ${JSON.stringify(zone.polygon)}, expected about ${JSON.stringify(rectangle)}`);
  observed.saved_zone = zone;

  // Three corners on one line, closed with the button: the gateway must refuse it.
  await startZone(page, 'bad', 'no_parking');
  await clickCanvas(page, [[0.2, 0.5], [0.5, 0.5], [0.8, 0.5]]);
  await page.locator('#zone-close').click();
  const refused = await saveAndWait(page, '"Refused:" and "no area" in the save status',
    (text) => (text.includes('Refused:') && text.includes('no area')) || /Saved|Not saved/.test(text));
  check(refused.startsWith('Refused:') && refused.includes('no area'), `expected a refusal, got: ${refused}`);
  observed.refused_message = refused;
  check(await page.locator('#zone-list [data-zone-id="bad"]').count(), 'the refused zone vanished from the editor');
  await screenshot(page, 'editor-refused.png');

  const afterRefusal = await apiGet(`/api/cameras/${encodeURIComponent(camera)}`);
  observed.zones_on_gateway = (afterRefusal.zones || []).map((z) => z.id);
  check(!observed.zones_on_gateway.includes('bad'), 'the refused zone was saved anyway');
  check(observed.zones_on_gateway.includes(newZoneId), `zone ${newZoneId} is gone after the refused save`);
}

/**
 * Teaching a bin area (issue 15): select the saved bin_area zone, label its live crop once as
 * normal and once as overflowing, train, and see the accuracy and the live reading.
 */
async function binsScenario(browser) {
  const { camera, binZone } = config;
  const page = await openPage(browser, DESKTOP);
  await page.goto(`${config.gatewayUrl}/editor?camera=${encodeURIComponent(camera)}`);
  await waitUntil(page, `a frame of ${camera} on the canvas`, config.waitTimeoutMs,
    () => page.locator('#zone-canvas[data-frame-loaded="true"]').count());
  const before = await apiGet(`/api/cameras/${encodeURIComponent(camera)}/bin-zones/${encodeURIComponent(binZone)}`);
  await page.locator(`#zone-list [data-zone-id=${cssString(binZone)}] button`).click();
  await waitUntil(page, 'the bin area panel with its live crop', 30000,
    async () => (await page.locator('#bin-panel[data-loaded="true"]').count())
      && (await page.locator('#bin-live[data-loaded="true"]').count()));
  check((await page.locator('#bin-title').textContent()) === `Teach bin area ${binZone}`, 'wrong panel title');
  const gallery = '#bin-gallery li.bin-example';
  const startCount = await page.locator(gallery).count();
  check(startCount === before.examples.length,
    `the gallery shows ${startCount} examples, the gateway holds ${before.examples.length}`);

  let added = 0;
  for (const [button, label] of [['#bin-normal', 'normal'], ['#bin-overflowing', 'overflowing']]) {
    await waitUntil(page, `${button} to be enabled`, 30000, () => page.locator(button).isEnabled());
    await page.locator(button).click();
    await waitUntil(page, `"Added as ${label}"`, 30000, async () => {
      const text = (await page.locator('#bin-status').textContent()) || '';
      check(!text.startsWith('Not added'), `adding an example failed: ${text}`);
      return text.startsWith(`Added as ${label}`);
    });
    added += 1;
  }
  await waitUntil(page, 'the gallery to show the new examples', 30000,
    async () => (await page.locator(gallery).count()) === startCount + added);
  observed.examples_added = added;

  await page.locator('#bin-train').click();
  const trainedText = await waitUntil(page, 'the training result', 60000, async () => {
    const text = (await page.locator('#bin-status').textContent()) || '';
    check(!text.startsWith('Not trained'), `training failed: ${text}`);
    return text.startsWith('Trained on') ? text : null;
  });
  observed.accuracy_text = trainedText;
  // Hot-applied: the panel says the learned model is in use, and the live reading comes from it.
  await waitUntil(page, 'the learned model in use and a reading from it', 30000,
    async () => ((await page.locator('#bin-source').textContent()) || '').includes('Model in use: learned')
      && (await page.locator('#bin-reading').getAttribute('data-source')) === 'learned');
  const score = await page.locator('#bin-reading').getAttribute('data-score');
  observed.reading_score = Number(score);
  observed.reading_text = await page.locator('#bin-reading').textContent();
  await screenshot(page, 'editor-bins.png');

  const zonePath = `/api/cameras/${encodeURIComponent(camera)}/bin-zones/${encodeURIComponent(binZone)}`;
  const trained = await apiGet(zonePath);
  check(trained.examples.length === before.examples.length + added,
    `the gateway holds ${trained.examples.length} examples, expected ${before.examples.length + added}`);
  check(trained.trained && trained.trained.examples === trained.examples.length, 'the gateway has no matching training');

  // The gallery's newest example (listed first) deleted with its button.
  const newest = page.locator(gallery).first();
  const newestId = Number(await newest.getAttribute('data-example-id'));
  check(await newest.locator('img').evaluate((img) => img.complete && img.naturalWidth > 0),
    'the newest example has no thumbnail');
  await newest.locator('button').click();
  await waitUntil(page, `example ${newestId} to leave the gallery`, 30000,
    async () => !(await page.locator(`${gallery}[data-example-id="${newestId}"]`).count()));
  const afterDelete = await apiGet(zonePath);
  check(!afterDelete.examples.some((e) => e.id === newestId), `example ${newestId} is still on the gateway`);
  observed.examples_deleted = 1;
}

// ---- main ----------------------------------------------------------------------------------

const SCENARIOS = { console: consoleScenario, editor: editorScenario, bins: binsScenario, clip: clipScenario, selfcheck };

async function main() {
  const argument = process.argv[2];
  const name = argument === '--self-check' ? 'selfcheck' : argument;
  if (!SCENARIOS[name]) {
    process.stderr.write(`usage: node run.mjs <${Object.keys(SCENARIOS).join('|')}> (or --self-check)\n`);
    process.exit(2);
  }
  observed.scenario = name;
  fs.mkdirSync(config.artefactDir, { recursive: true });
  let browser;
  let failure = null;
  try {
    browser = await launch();
    await SCENARIOS[name](browser);
    // Give late errors (a failing event handler) a moment to surface.
    await sleep(300);
    check(!pageProblems.length, `the page reported ${pageProblems.length} problem(s):\n  ${pageProblems.join('\n  ')}`);
  } catch (error) {
    failure = error;
    if (currentPage) {
      await currentPage.screenshot({ path: path.join(config.artefactDir, `${name}-failure.png`) }).catch(() => {});
    }
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
  observed.page_problems = pageProblems;
  if (failure) {
    // Playwright appends a call log to its messages; the first part says what went wrong.
    observed.error = String(failure.message).split('\nCall log:')[0];
    process.stderr.write(`FAIL ${name}: ${env.DEBUG ? failure.stack : observed.error}\n`);
  } else {
    process.stderr.write(`PASS ${name}\n`);
  }
  process.stdout.write(`${JSON.stringify(observed)}\n`);
  process.exit(failure ? 1 : 0);
}

main();
