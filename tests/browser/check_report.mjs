#!/usr/bin/env node
// Real-browser check of a loopprof report.html in headless Chromium.
//
//   node tests/browser/check_report.mjs REPORT.html SCREENSHOT.png
//
// Loads the report from file:// (viewport 1280x900), checks that it renders, that the embedded
// inferno flame graphs work (zoom, Reset Zoom, Search, Ctrl-F), that nothing errors and that no
// network request is made, then writes a full-page screenshot. Prints one line per check; exits
// 1 at the first failed check (2 on a usage error or the 60 s watchdog).
//
// Needs `npm ci` in tests/browser (playwright-core only: no browser download) and Debian's
// Chromium at /usr/bin/chromium (override with CHROMIUM=/path/to/chrome).
import { mkdtempSync, rmSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const OVERALL_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 10_000;
const VIEWPORT = { width: 1280, height: 900 };
// inferno's highlight colour (`searchcolor` in its SVG script).
const SEARCH_COLOR = 'rgb(230,0,230)';
const ALLOWED_SCHEMES = new Set(['file:', 'data:', 'about:', 'blob:']);

const [reportArg, shotArg] = process.argv.slice(2);
if (!reportArg || !shotArg) {
  console.error('usage: node tests/browser/check_report.mjs REPORT.html SCREENSHOT.png');
  process.exit(2);
}
const reportPath = resolve(reportArg);
const shotPath = resolve(shotArg);
if (!existsSync(reportPath)) {
  console.error(`check_report: no such file: ${reportPath}`);
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
if (!existsSync(executablePath)) {
  console.error(`check_report: no Chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM=)`);
  process.exit(2);
}

const started = Date.now();
const secs = () => ((Date.now() - started) / 1000).toFixed(1);

// Everything the page does that it must not: collected from the start, checked at the end (and
// shown with any earlier failure, since an error often explains it).
const consoleErrors = [];
const pageErrors = [];
const networkRequests = [];
// Both kinds of error in arrival order, so that a step can tell which ones it caused.
const errorLog = [];

let context;
let userDataDir;
function cleanup() {
  if (userDataDir) {
    try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
  }
}

class CheckFailed extends Error {}
function ok(name, detail = '') {
  console.log(`ok   ${name}${detail ? ` — ${detail}` : ''}`);
}
function fail(name, message) {
  throw new CheckFailed(`FAIL ${name}: ${message}`);
}
function collectedProblems() {
  const lines = [];
  for (const e of consoleErrors) lines.push(`  console error: ${e}`);
  for (const e of pageErrors) lines.push(`  page error: ${e}`);
  for (const r of networkRequests) lines.push(`  network request: ${r}`);
  return lines;
}

const watchdog = setTimeout(() => {
  console.error(`FAIL overall timeout: the check did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`);
  for (const l of collectedProblems()) console.error(l);
  cleanup();
  process.exit(2);
}, OVERALL_TIMEOUT_MS);

// A flame graph's URL is its whole base64 SVG: keep messages readable.
function shorten(text) {
  // (Chromium already elides the middle of long URLs with "...": drop both halves.)
  return String(text).replace(/data:([\w+.\/-]+);base64,[A-Za-z0-9+/=]*(?:(?:\.\.\.|…)[A-Za-z0-9+/=]*)?/g, (_m, type) => `data:${type};base64,…`);
}

function isAllowedUrl(url) {
  try {
    return ALLOWED_SCHEMES.has(new URL(url).protocol);
  } catch {
    return false;
  }
}

// An interaction (a click, a key) must not throw or log an error: give the page a moment to
// report one, then fail the step that caused it with the error itself.
async function expectNoNewErrors(page, name, mark, what) {
  await page.waitForTimeout(150);
  const fresh = errorLog.slice(mark);
  if (fresh.length) fail(name, `${what} raised ${fresh.length} error(s):\n${fresh.map((e) => `  ${e}`).join('\n')}`);
}

// Full page. The flame graphs are cross-origin (data:) frames, rendered out of process, and
// Chromium paints them blank in a capture beyond the viewport: make the viewport as tall as the
// page first, so that every frame is on screen and painted.
async function takeScreenshot(page) {
  await page.evaluate(() => window.scrollTo(0, 0));
  const [width, height] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]);
  await page.setViewportSize({ width: VIEWPORT.width, height: Math.min(height, 16_384) });
  for (const f of page.frames()) {
    await f.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))).catch(() => {});
  }
  await page.screenshot({ path: shotPath, fullPage: true, animations: 'disabled' });
  await page.setViewportSize(VIEWPORT);
  return `${shotPath} (${width}x${height}px, ${(statSync(shotPath).size / 1024).toFixed(0)} KiB)`;
}

let page;
async function main() {
  userDataDir = mkdtempSync(join(tmpdir(), 'loopprof-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: VIEWPORT,
    serviceWorkers: 'block',
    timeout: 30_000,
    // As root in a sandbox-less container; the background-networking flags stop Chromium's own
    // calls home (which this machine's closed network refuses, noisily).
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);

  // Any request that leaves file:/data:/about: is recorded (and aborted, so the check never
  // depends on, or waits for, the network).
  context.on('request', (req) => {
    if (!isAllowedUrl(req.url())) networkRequests.push(`${req.method()} ${req.url()}`);
  });
  await context.route(/^(?!(file|data|about|blob):)/i, (route) => route.abort('blockedbyclient'));

  page = context.pages()[0] ?? (await context.newPage());
  // Console messages and uncaught exceptions of child frames (the flame-graph iframes, which may
  // run out of process) are reported on the page too.
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      const loc = msg.location();
      const where = loc && loc.url ? ` (at ${shorten(loc.url)}:${loc.lineNumber})` : '';
      const text = shorten(`${msg.text()}${where}`);
      consoleErrors.push(text);
      errorLog.push(`console error: ${text}`);
    }
  });
  page.on('pageerror', (err) => {
    const text = shorten(err && err.message ? `${err.name}: ${err.message}` : err);
    pageErrors.push(text);
    errorLog.push(`page error: ${text}`);
  });
  page.on('websocket', (ws) => networkRequests.push(`WebSocket ${ws.url()}`));
  // Dialogs are answered by whoever expects one (the search check); any other one is dismissed
  // so that it cannot hang the page.
  let dialogAnswer = null;
  const dialogsSeen = [];
  page.on('dialog', async (dialog) => {
    dialogsSeen.push(`${dialog.type()}: ${dialog.message()}`);
    if (dialog.type() === 'prompt' && dialogAnswer !== null) {
      const answer = dialogAnswer;
      dialogAnswer = null;
      await dialog.accept(answer);
    } else {
      await dialog.dismiss();
    }
  });

  const url = pathToFileURL(reportPath).href;
  await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  ok('page loads', `${url} (${(statSync(reportPath).size / 1024).toFixed(0)} KiB) in ${secs()} s`);

  // --- no script in the top document (the report itself must run none; only the sandboxed
  // flame-graph SVGs do). A <script> or an on* handler here means some text was not escaped.
  {
    const found = await page.evaluate(() => {
      const scripts = document.querySelectorAll('script').length;
      const handlers = [];
      for (const el of document.querySelectorAll('*')) {
        for (const a of el.attributes) {
          if (/^on/i.test(a.name)) handlers.push(`<${el.localName} ${a.name}>`);
        }
      }
      const badFrames = [...document.querySelectorAll('iframe, frame, object, embed')]
        .map((f) => f.getAttribute('src') || f.getAttribute('data') || '')
        .filter((src) => !src.startsWith('data:image/svg+xml;base64,'))
        .map((src) => src.slice(0, 60));
      return { scripts, handlers: handlers.slice(0, 5), badFrames };
    });
    if (found.scripts !== 0) fail('no script in the top document', `${found.scripts} <script> element(s) in the main frame`);
    if (found.handlers.length) fail('no script in the top document', `inline event handler attribute(s): ${found.handlers.join(', ')}`);
    if (found.badFrames.length) fail('no script in the top document', `embedded frame(s) not a data:image/svg+xml: ${found.badFrames.join(', ')}`);
    ok('no script in the top document', '0 <script>, 0 on* attributes, every iframe a data: SVG');
  }

  // --- verdict banner, in the first screen
  {
    const name = 'verdict banner visible in the first viewport';
    const summary = page.locator('#verdict .summary');
    if ((await summary.count()) !== 1) fail(name, `expected one #verdict .summary, found ${await summary.count()}`);
    const text = ((await summary.textContent()) || '').trim();
    if (!text) fail(name, '#verdict .summary is empty');
    if (!(await summary.isVisible())) fail(name, '#verdict .summary is not visible');
    const box = await summary.boundingBox();
    if (!box || box.height <= 0) fail(name, '#verdict .summary has no layout box');
    if (box.y >= VIEWPORT.height) fail(name, `#verdict .summary starts at y=${box.y.toFixed(0)}, below the first ${VIEWPORT.height}px`);
    ok(name, `top=${box.y.toFixed(0)}px: "${text.length > 90 ? `${text.slice(0, 90)}…` : text}"`);
  }

  // --- findings
  {
    const name = 'finding cards';
    const kind = ((await page.locator('#verdict .kind').first().textContent({ timeout: 2000 }).catch(() => '')) || '').trim();
    if (!kind) fail(name, '#verdict .kind is missing or empty');
    const cards = await page.locator('#findings .card').count();
    if (kind.toLowerCase() !== 'verdict: healthy' && cards < 1) fail(name, `"${kind}" but no #findings .card`);
    ok(name, `"${kind}", ${cards} card(s)`);
  }

  // --- timeline
  {
    const name = 'timeline renders';
    const svg = page.locator('#timeline svg.timeline');
    if ((await svg.count()) < 1) fail(name, 'no #timeline svg.timeline');
    const rects = await svg.first().locator('rect').count();
    if (rects < 1) fail(name, 'the timeline SVG has no <rect>');
    await svg.first().scrollIntoViewIfNeeded();
    const box = await svg.first().boundingBox();
    if (!box || box.width < 100 || box.height < 20) fail(name, `timeline box too small: ${JSON.stringify(box)}`);
    ok(name, `${rects} rects, ${box.width.toFixed(0)}x${box.height.toFixed(0)}px`);
  }

  // --- every flame graph loads (iframes are loading="lazy": scroll each into view) and its
  // inferno script runs.
  const iframes = page.locator('#flamegraphs iframe');
  const nFlames = await iframes.count();
  {
    const name = 'flame graphs render';
    if (nFlames < 1) fail(name, 'no #flamegraphs iframe');
    const summaries = [];
    for (let i = 0; i < nFlames; i++) {
      const iframe = iframes.nth(i);
      const title = (await iframe.getAttribute('title')) || `iframe #${i + 1}`;
      await iframe.scrollIntoViewIfNeeded();
      const frame = iframe.contentFrame();
      try {
        await frame.locator('#frames > g > rect').nth(5).waitFor({ state: 'attached' });
      } catch {
        const n = await frame.locator('#frames > g > rect').count().catch(() => 0);
        fail(name, `"${title}": ${n} frame rect(s) after ${STEP_TIMEOUT_MS / 1000} s (want > 5)`);
      }
      // inferno's init() runs from the SVG's onload and, a tick later, fits #frames to the
      // iframe's width; a script blocked by the CSP or broken by escaping never gets there.
      const state = await frame.locator('svg').first().evaluate(async (svg) => {
        const deadline = Date.now() + 5000;
        const frames = document.getElementById('frames');
        const want = () => String(svg.width.baseVal.value - 20);
        while (Date.now() < deadline && !(typeof zoom === 'function' && !svg.hasAttribute('width') && frames.getAttribute('width') === want())) {
          await new Promise((r) => setTimeout(r, 25));
        }
        const rects = document.querySelectorAll('#frames > g > rect');
        const root = [...rects].reduce((a, r) => (+r.getAttribute('fg:w') > +a.getAttribute('fg:w') ? r : a), rects[0]);
        const rb = root.getBoundingClientRect();
        return {
          scriptRan: typeof zoom === 'function' && typeof search === 'function',
          fitted: frames.getAttribute('width') === want(),
          framesWidth: frames.getAttribute('width'),
          rects: rects.length,
          rootWidth: rb.width,
          rootHeight: rb.height,
        };
      });
      if (!state.scriptRan) fail(name, `"${title}": inferno's script did not run (no zoom()/search())`);
      if (!state.fitted) fail(name, `"${title}": inferno's init did not fit the graph to the frame (#frames width=${state.framesWidth})`);
      if (state.rects <= 5) fail(name, `"${title}": only ${state.rects} frame rects`);
      if (!(state.rootWidth > 100 && state.rootHeight > 5)) fail(name, `"${title}": root frame not drawn (${state.rootWidth}x${state.rootHeight}px)`);
      summaries.push(`${title.replace(/ flame graph$/, '')}: ${state.rects}`);
    }
    ok(name, `${nFlames} iframe(s), frame rects — ${summaries.join(', ')}`);
  }

  // --- zoom (click a frame that is not the root), then Reset Zoom, in the first flame graph
  // that has a frame narrower than the whole graph (a loop blocked at a single call site
  // gives one full-width chain: nothing to zoom into there).
  const pickIn = (frames) => {
      const total = parseInt(frames.getAttribute('total_samples'), 10);
      let best = -1;
      let bestW = 0;
      [...frames.children].forEach((g, i) => {
        const r = g.querySelector('rect');
        const w = r ? parseInt(r.getAttribute('fg:w'), 10) : 0;
        if (w < total && w > bestW) { best = i; bestW = w; }
      });
      const g = frames.children[best];
      return best < 0 ? null : {
        index: best,
        fgw: bestW,
        total,
        width: g.querySelector('rect').getAttribute('width'),
        title: g.querySelector('title').textContent,
      };
  };
  let fg = null;
  let pick = null;
  for (let i = 0; i < nFlames && !pick; i++) {
    const frameEl = iframes.nth(i);
    await frameEl.scrollIntoViewIfNeeded();
    fg = frameEl.contentFrame();
    pick = await fg.locator('#frames').evaluate(pickIn);
  }
  {
    const name = 'flame graph zoom';
    if (!pick) fail(name, 'in every flame graph, every frame spans the whole graph: nothing to zoom into');
    const unzoom = fg.locator('#unzoom');
    if (!(await unzoom.evaluate((e) => e.classList.contains('hide')))) fail(name, '"Reset Zoom" is shown before any zoom');
    const target = fg.locator('#frames > g').nth(pick.index);
    let mark = errorLog.length;
    await target.click();
    const after = await target.evaluate(async (g) => {
      const deadline = Date.now() + 3000;
      const unzoom = document.getElementById('unzoom');
      while (Date.now() < deadline && unzoom.classList.contains('hide')) await new Promise((r) => setTimeout(r, 25));
      return {
        width: g.querySelector('rect').getAttribute('width'),
        unzoomShown: !unzoom.classList.contains('hide'),
        hidden: document.querySelectorAll('#frames > g.hide').length,
      };
    });
    if (!after.unzoomShown) fail(name, `clicked "${pick.title}" but "Reset Zoom" stayed hidden`);
    if (parseFloat(after.width) < 99.9) fail(name, `clicked "${pick.title}" (width ${pick.width}) but its width is now ${after.width}, not 100%`);
    await expectNoNewErrors(page, name, mark, 'clicking a frame');
    ok(name, `clicked "${pick.title.replace(/ \(\d+ samples.*$/, '')}": width ${pick.width} → ${after.width}, ${after.hidden} frames hidden, "Reset Zoom" shown`);

    const rname = 'flame graph Reset Zoom';
    mark = errorLog.length;
    await unzoom.click();
    const reset = await target.evaluate(async (g) => {
      const deadline = Date.now() + 3000;
      const unzoom = document.getElementById('unzoom');
      while (Date.now() < deadline && !unzoom.classList.contains('hide')) await new Promise((r) => setTimeout(r, 25));
      return {
        width: g.querySelector('rect').getAttribute('width'),
        unzoomHidden: unzoom.classList.contains('hide'),
        hidden: document.querySelectorAll('#frames > g.hide, #frames > g.parent').length,
      };
    });
    if (!reset.unzoomHidden) fail(rname, '"Reset Zoom" still shown after clicking it');
    await expectNoNewErrors(page, rname, mark, 'clicking "Reset Zoom"');
    if (reset.hidden !== 0) fail(rname, `${reset.hidden} frames still hidden/dimmed after Reset Zoom`);
    if (Math.abs(parseFloat(reset.width) - parseFloat(pick.width)) > 0.01) fail(rname, `frame width ${reset.width}, expected ${pick.width} again`);
    ok(rname, `width back to ${reset.width}, all frames shown`);
  }

  // --- search: the "Search" control opens a prompt(); answer it with a function name that is in
  // the graph, and expect highlighted frames and a "Matched: N%" line.
  {
    const name = 'flame graph search';
    const term = await fg.locator('#frames').evaluate((frames) => {
      const total = frames.getAttribute('total_samples');
      // First frame that is not the synthetic root/process/thread row: its function name, up
      // to the first space ("Thread.join (python3.11/threading.py:1119) (…)" → "Thread.join").
      for (const g of frames.children) {
        const title = g.querySelector('title').textContent;
        const name = title.split(' ')[0];
        if (g.querySelector('rect').getAttribute('fg:w') !== total && /^[\w.]+$/.test(name)) return name;
      }
      return null;
    });
    if (!term) fail(name, 'no searchable function name in the first flame graph');
    const regex = term.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const expected = await fg.locator('#frames').evaluate((frames, re) => {
      const r = new RegExp(re);
      return [...frames.querySelectorAll('g > title')].filter((t) => r.test(t.textContent)).length;
    }, regex);
    const nDialogs = dialogsSeen.length;
    dialogAnswer = regex;
    const mark = errorLog.length;
    await fg.locator('#search').click();
    const res = await fg.locator('#frames').evaluate(async (frames, color) => {
      const deadline = Date.now() + 3000;
      const matched = document.getElementById('matched');
      while (Date.now() < deadline && !/^Matched:/.test(matched.textContent)) await new Promise((r) => setTimeout(r, 25));
      return {
        highlighted: [...frames.querySelectorAll('rect')].filter((r) => r.getAttribute('fill') === color).length,
        matched: matched.textContent,
        button: document.getElementById('search').textContent,
      };
    }, SEARCH_COLOR);
    if (dialogsSeen.length === nDialogs) fail(name, 'clicking "Search" opened no prompt()');
    if (dialogAnswer !== null) { dialogAnswer = null; fail(name, 'the search prompt was not answered'); }
    if (res.highlighted < 1) fail(name, `searched /${regex}/ but no frame turned ${SEARCH_COLOR}`);
    if (res.highlighted !== expected) fail(name, `searched /${regex}/: ${res.highlighted} highlighted, ${expected} titles match`);
    await expectNoNewErrors(page, name, mark, `searching /${regex}/`);
    if (!/^Matched: [\d.]+%$/.test(res.matched)) fail(name, `"Matched:" text is "${res.matched}", not "Matched: N%"`);
    ok(name, `prompt answered /${regex}/: ${res.highlighted} frame(s) highlighted, "${res.matched}", button now "${res.button}"`);

    // Ctrl-F toggles search too; with a search active it resets it (no prompt), which also
    // leaves the graph clean for the screenshot.
    const kname = 'flame graph Ctrl-F';
    await fg.locator('#frames > g').first().hover();
    const kmark = errorLog.length;
    await page.keyboard.press('Control+f');
    const cleared = await fg.locator('#frames').evaluate(async (frames, color) => {
      const deadline = Date.now() + 3000;
      const hl = () => [...frames.querySelectorAll('rect')].filter((r) => r.getAttribute('fill') === color).length;
      while (Date.now() < deadline && hl() > 0) await new Promise((r) => setTimeout(r, 25));
      return { highlighted: hl(), button: document.getElementById('search').textContent };
    }, SEARCH_COLOR);
    if (cleared.highlighted !== 0) fail(kname, `Ctrl-F in the flame graph did not reset the search (${cleared.highlighted} frames still highlighted)`);
    await expectNoNewErrors(page, kname, kmark, 'Ctrl-F');
    ok(kname, `reset the search, button back to "${cleared.button}"`);
  }

  // --- nothing went wrong along the way (checked last: the interactions above run the SVGs'
  // scripts, and a lazy iframe only loads once scrolled to).
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(200);
  if (networkRequests.length) {
    fail('no network requests', `${networkRequests.length} request(s) off file:/data:/about:\n${networkRequests.map((r) => `  ${r}`).join('\n')}`);
  }
  ok('no network requests', 'only file:/data:/about: URLs');
  if (consoleErrors.length || pageErrors.length) {
    const n = consoleErrors.length + pageErrors.length;
    fail('no console or page errors', `${n} error(s):\n${collectedProblems().filter((l) => !l.includes('network request')).join('\n')}`);
  }
  ok('no console or page errors', `in the page and its ${page.frames().length - 1} frame(s)`);

  // Not a check, a note: content wider than the viewport means a horizontal scrollbar.
  const overflow = await page.evaluate(() => {
    const limit = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll('body *')]
      .filter((el) => el.getBoundingClientRect().right > limit + 1 && !(el.parentElement && el.parentElement.getBoundingClientRect().right > limit + 1))
      .map((el) => {
        const sec = el.closest('section[id]');
        const name = (e) => `${e.localName}${e.className ? `.${String(e.className).split(' ')[0]}` : ''}`;
        const parent = el.parentElement ? `${name(el.parentElement)} > ` : '';
        return `${sec ? `#${sec.id} ` : ''}${parent}${name(el)} (right edge ${el.getBoundingClientRect().right.toFixed(0)}px)`;
      });
    return { scrollWidth: document.documentElement.scrollWidth, limit, wide: wide.slice(0, 5) };
  });
  if (overflow.scrollWidth > overflow.limit) {
    console.log(`warn page wider than the ${overflow.limit}px viewport (${overflow.scrollWidth}px): ${overflow.wide.join(', ')}`);
  }

  ok('screenshot', await takeScreenshot(page));
}

let code = 0;
try {
  await main();
  console.log(`all checks passed in ${secs()} s`);
} catch (err) {
  code = 1;
  if (err instanceof CheckFailed) {
    console.error(err.message);
  } else {
    console.error(`FAIL unexpected error: ${err && err.stack ? err.stack : err}`);
  }
  const extra = collectedProblems().filter((l) => !String(err && err.message).includes(l.replace(/^ *[a-z ]+: /, '')));
  if (extra.length) {
    console.error('collected so far:');
    for (const l of extra) console.error(l);
  }
  // The page as the failure left it, for whoever reads the CI log.
  if (page && !page.isClosed()) {
    try {
      console.error(`screenshot after the failure: ${await takeScreenshot(page)}`);
    } catch (e) {
      console.error(`(no screenshot: ${String(e && e.message).split('\n')[0]})`);
    }
  }
} finally {
  if (context) await context.close().catch(() => {});
  cleanup();
  clearTimeout(watchdog);
}
process.exit(code);
