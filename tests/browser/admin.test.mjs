// The admin page in headless Chromium (Debian's /usr/bin/chromium through playwright-core):
// sign in, create a local-files storage, watch its sync complete, see a failure's
// traceback, edit, delete. Run by scripts/test-browser; screenshots go to artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const artifacts = path.join(here, 'artifacts');
const binary = process.env.LABELPORT_BIN || path.join(repo, 'target/debug/labelport');
const EMAIL = 'admin@example.com';
const PASSWORD = 'correct horse battery';
const TOKEN = 'browser-test-token-0123456789';

let tmp, root, server, base, context, page, serverLog = '';

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

async function call(method, url, body) {
  const response = await fetch(base + url, {
    method,
    headers: { Authorization: `Token ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, data: text ? JSON.parse(text) : null };
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'labelport-browser-'));
  root = path.join(tmp, 'root');
  fs.mkdirSync(path.join(root, 'training'), { recursive: true });
  fs.mkdirSync(path.join(root, 'archive'), { recursive: true });
  fs.mkdirSync(artifacts, { recursive: true });
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = { ...process.env };
  delete env.DATABASE_URL;
  Object.assign(env, {
    LABEL_STUDIO_USERNAME: EMAIL, LABEL_STUDIO_PASSWORD: PASSWORD, LABEL_STUDIO_USER_TOKEN: TOKEN,
    LOCAL_FILES_SERVING_ENABLED: 'true', LOCAL_FILES_DOCUMENT_ROOT: root, RUST_LOG: 'warn',
  });
  server = spawn(binary, ['serve', '--port', String(port), '--data-dir', path.join(tmp, 'data')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout.on('data', (d) => { serverLog += d; });
  server.stderr.on('data', (d) => { serverLog += d; });
  for (let i = 0; ; i += 1) {
    try { if ((await fetch(`${base}/health`)).ok) break; } catch { /* not up yet */ }
    if (i > 600 || server.exitCode !== null) throw new Error(`labelport did not start:\n${serverLog}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // Arrange: a project with annotated tasks, and an empty one.
  const project = await call('POST', '/api/projects/', { title: 'Product reviews' });
  assert.equal(project.status, 201, JSON.stringify(project.data));
  const tasks = ['great', 'awful', 'fine', 'superb', 'meh'].map((text, i) => ({
    data: { text }, annotations: [{ result: [{ value: { choices: [i % 2 ? 'Negative' : 'Positive'] } }] }],
  }));
  assert.equal((await call('POST', `/api/projects/${project.data.id}/import`, tasks)).status, 201);
  assert.equal((await call('POST', '/api/projects/', { title: 'Support tickets' })).status, 201);

  context = await chromium.launchPersistentContext(path.join(tmp, 'chromium-profile'), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(30000);
  page.on('pageerror', (e) => console.error('page error:', e));
});

after(async () => {
  if (page) await page.screenshot({ path: path.join(artifacts, 'last.png'), fullPage: true }).catch(() => {});
  if (context) await context.close();
  if (server) server.kill('SIGTERM');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function shoot(name) {
  for (const width of [1280, 400]) {
    await page.setViewportSize({ width, height: 900 });
    await page.screenshot({ path: path.join(artifacts, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

const card = (title) => page.locator('li.storage', { has: page.getByRole('heading', { name: title }) });

test('a wrong password is refused and the right one signs in with a strict HttpOnly cookie', async () => {
  await page.goto(base + '/');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shoot('signin');
  assert.equal(await page.getByRole('button', { name: 'Sign out' }).isVisible(), false);
  // The keyboard alone: the email field has focus; Tab to the password, Enter submits.
  await page.keyboard.type(EMAIL);
  await page.keyboard.press('Tab');
  await page.keyboard.type('wrong password');
  await page.keyboard.press('Enter');
  await page.getByText('Unable to log in with provided credentials.').waitFor();
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await page.getByLabel('Password', { exact: true }).press('Enter');
  await page.getByRole('heading', { name: 'Export storages' }).waitFor();
  await page.getByRole('heading', { name: /Product reviews/ }).waitFor();
  // Signing in replaced the history entry: Back does not return to the sign-in form.
  assert.equal(await page.evaluate(() => location.hash), '#/');
  const cookie = (await context.cookies(base)).find((c) => c.name === 'labelport_session');
  assert.ok(cookie, 'the session cookie is set');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('labelport_session')), false);
});

test('a state-changing request with the cookie but without the CSRF header is refused', async () => {
  const status = await page.evaluate(async () => (await fetch('/api/projects/', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"title": "forged"}',
  })).status);
  assert.equal(status, 403);
  const projects = await call('GET', '/api/projects/');
  assert.ok(!projects.data.results.some((p) => p.title === 'forged'));
});

test('a storage created from the form syncs to completion and its files appear', async () => {
  const section = page.locator('section.project', { has: page.getByRole('heading', { name: /Product reviews/ }) });
  await section.getByLabel('New storage').selectOption('localfiles');
  await section.getByRole('button', { name: 'Add storage' }).click();
  await page.getByRole('heading', { name: 'New Local Files storage' }).waitFor();
  // A path outside the document root: the API's error shows next to the path field.
  await page.getByLabel(/Storage Name/).fill('Training data');
  await page.getByLabel(/Absolute local path/).fill('/definitely/not/here');
  await page.getByRole('button', { name: 'Create storage' }).click();
  const pathError = page.locator('#f-path-error, #form-errors');
  await pathError.filter({ hasText: /\S/ }).first().waitFor();
  await shoot('form-error');
  await page.getByLabel(/Absolute local path/).fill(path.join(root, 'training'));
  await page.getByRole('button', { name: 'Create storage' }).click();
  await page.getByRole('heading', { name: 'Export storages' }).waitFor();
  // The sync started on creation; the card updates by itself until it completes.
  await card('Training data').and(page.locator('[data-status="completed"]')).waitFor();
  await card('Training data').getByText('Completed', { exact: true }).waitFor();
  assert.equal(fs.readdirSync(path.join(root, 'training')).length, 5);
  // A full sync from the page completes again.
  await card('Training data').getByRole('button', { name: 'Full sync' }).click();
  await card('Training data').and(page.locator('[data-status="completed"]')).waitFor();
});

test('a running sync shows a live progress bar that follows the storage', async () => {
  // Five annotations sync in milliseconds, too fast to watch: the API's answers are held
  // and shaped as a running sync's, step by step, so the page can be seen at each one.
  const running = (s, done) => ({ ...s, status: 'in_progress', last_sync_count: done, meta: { ...s.meta, total_annotations: 5 } });
  const gates = [];
  const gate = () => { let open; const p = new Promise((r) => { open = r; }); gates.push(open); return p; };
  const first = gate();
  const second = gate();
  let polls = 0;
  await page.route(/\/api\/storages\/export\?project=1$/, async (route) => {
    const response = await route.fetch();
    const list = await response.json();
    await route.fulfill({ response, json: list.map((s) => (s.title === 'Training data' ? running(s, 2) : s)) });
  });
  await page.route(/\/api\/storages\/export\/localfiles\/\d+$/, async (route) => {
    polls += 1;
    const poll = polls;
    await (poll === 1 ? first : second);
    const response = await route.fetch();
    const s = await response.json();
    await route.fulfill({ response, json: poll === 1 ? running(s, 4) : s });
  });
  await page.reload();
  const training = card('Training data');
  await training.getByText('2 of 5 annotations').waitFor();
  assert.equal(await training.locator('progress').getAttribute('value'), '2');
  assert.equal(await training.getByRole('button', { name: 'Sync', exact: true }).isDisabled(), true);
  await shoot('progress');
  gates[0]();
  await training.getByText('4 of 5 annotations').waitFor();
  assert.equal(await training.locator('progress').getAttribute('value'), '4');
  gates[1]();
  await training.and(page.locator('[data-status="completed"]')).waitFor();
  assert.equal(await training.locator('progress').count(), 0);
  await page.unrouteAll();
});

test('a sync refused or failing shows why: the API error, and the traceback', async () => {
  const section = page.locator('section.project', { has: page.getByRole('heading', { name: /Product reviews/ }) });
  await section.getByLabel('New storage').selectOption('localfiles');
  await section.getByRole('button', { name: 'Add storage' }).click();
  await page.getByLabel(/Storage Name/).fill('Nightly archive');
  await page.getByLabel(/Absolute local path/).fill(path.join(root, 'archive'));
  await page.getByRole('button', { name: 'Create storage' }).click();
  await card('Nightly archive').and(page.locator('[data-status="completed"]')).waitFor();
  // The directory is gone: the API refuses to queue the sync, and the page says why.
  fs.renameSync(path.join(root, 'archive'), path.join(root, 'archive-moved'));
  await card('Nightly archive').getByRole('button', { name: 'Sync', exact: true }).click();
  await page.locator('#notice.error').filter({ hasText: /\S/ }).waitFor();
  fs.renameSync(path.join(root, 'archive-moved'), path.join(root, 'archive'));
  // A directory where an annotation's file belongs: the sync fails, with a traceback.
  const blocked = fs.readdirSync(path.join(root, 'archive'))[0];
  fs.rmSync(path.join(root, 'archive', blocked));
  fs.mkdirSync(path.join(root, 'archive', blocked, 'in-the-way'), { recursive: true });
  await card('Nightly archive').getByRole('button', { name: 'Full sync' }).click();
  await card('Nightly archive').and(page.locator('[data-status="failed"]')).waitFor();
  const traceback = card('Nightly archive').locator('details.traceback pre');
  await traceback.waitFor();
  assert.match(await traceback.textContent(), /Is a directory/);
  await shoot('overview');
});

test('editing keeps the back button working and saves the new title', async () => {
  await card('Nightly archive').getByRole('link', { name: 'Edit' }).click();
  await page.getByRole('heading', { name: 'Edit Local Files storage' }).waitFor();
  assert.equal(await page.getByLabel(/Storage Name/).inputValue(), 'Nightly archive');
  await page.goBack();
  await page.getByRole('heading', { name: 'Export storages' }).waitFor();
  await page.goForward();
  await page.getByRole('heading', { name: 'Edit Local Files storage' }).waitFor();
  await page.getByLabel(/Storage Name/).fill('Old archive');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('heading', { name: 'Export storages' }).waitFor();
  await card('Old archive').waitFor();
});

test('deleting asks for confirmation and removes the storage', async () => {
  await card('Old archive').getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  await card('Old archive').waitFor();
  await card('Old archive').getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete storage' }).click();
  await page.getByText('Old archive deleted').waitFor();
  await card('Old archive').waitFor({ state: 'detached' });
  const left = await call('GET', '/api/storages/export/localfiles?project=1');
  assert.deepEqual(left.data.map((s) => s.title), ['Training data']);
});

test('signing out ends the session and an API token signs in instead', async () => {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  const status = await page.evaluate(async () => (await fetch('/api/projects/')).status);
  assert.equal(status, 401);
  await page.getByLabel('Token', { exact: true }).fill(TOKEN);
  await page.getByRole('button', { name: 'Use token' }).click();
  await card('Training data').waitFor();
});
