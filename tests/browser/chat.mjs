// The chat page in a real browser: two headless Chromium tabs open sockloop's page, one
// types a message and presses Enter, and the other must show it. Then the second answers
// with the button, and the first must show that. A screenshot of the second tab is kept.
//
//   SOCKLOOP_BIN     the server binary (default: target/release/sockloop, else debug)
//   CHROMIUM         the browser (default: /usr/bin/chromium; nothing is downloaded)
//   CHAT_SCREENSHOT  where the screenshot goes (default: /tmp/chat.png)
//
// Exits 0 when both messages arrived, 1 otherwise; the server is killed either way, and
// the whole run is bounded by a watchdog.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const binary = process.env.SOCKLOOP_BIN
  ?? ['release', 'debug'].map((p) => `${root}/target/${p}/sockloop`).find(existsSync);
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const screenshot = process.env.CHAT_SCREENSHOT ?? '/tmp/chat.png';
const STEP_TIMEOUT = 15_000;
const WHOLE_RUN_TIMEOUT = 90_000;

let server;
let browser;
const serverLog = [];

function fail(message) {
  console.error(`chat.mjs: FAIL: ${message}`);
  if (serverLog.length) console.error(`server log:\n  ${serverLog.slice(-20).join('\n  ')}`);
  server?.kill('SIGKILL');
  process.exit(1);
}

// Whatever happens, don't hang CI: kill everything after WHOLE_RUN_TIMEOUT.
setTimeout(() => fail(`no result within ${WHOLE_RUN_TIMEOUT / 1000} s`), WHOLE_RUN_TIMEOUT).unref();
process.on('exit', () => server?.kill('SIGKILL'));

/** Start sockloop on port 0 and resolve with the address from its "listening on" line. */
function startServer() {
  if (!binary || !existsSync(binary)) fail(`no server binary (${binary}); build it first`);
  server = spawn(binary, ['--mode', 'ws', '--addr', '127.0.0.1:0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info' },
  });
  server.on('exit', (code, signal) => serverLog.push(`(server exited: ${code ?? signal})`));
  return new Promise((resolvePromise, reject) => {
    let pending = '';
    // Keep draining stderr for the whole run: a full pipe would block the server.
    server.stderr.setEncoding('utf8').on('data', (chunk) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines) {
        serverLog.push(line);
        const match = line.match(/listening on (\S+)/);
        if (match) resolvePromise(match[1]);
      }
    });
    server.on('error', reject);
    server.on('exit', () => reject(new Error('server exited before listening')));
    setTimeout(() => reject(new Error('no "listening on" line within 10 s')), 10_000).unref();
  });
}

async function openChat(context, url, name) {
  const page = await context.newPage();
  page.on('pageerror', (error) => fail(`${name}: page error: ${error.message}`));
  await page.goto(url, { timeout: STEP_TIMEOUT });
  await page.locator('#state', { hasText: 'open' }).waitFor({ timeout: STEP_TIMEOUT });
  await page.locator('#log li', { hasText: 'hello, I am a server' }).waitFor({ timeout: STEP_TIMEOUT });
  return page;
}

async function expectLine(page, name, text) {
  try {
    await page.locator('#log li', { hasText: text }).first().waitFor({ timeout: STEP_TIMEOUT });
  } catch {
    const shown = await page.locator('#log li').allTextContents();
    fail(`${name} never showed ${JSON.stringify(text)}; it shows ${JSON.stringify(shown)}`);
  }
  console.log(`ok: ${name} shows ${JSON.stringify(text)}`);
}

try {
  const addr = await startServer();
  const url = `http://${addr}/`;
  console.log(`sockloop at ${url}`);

  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox', // Chromium refuses to run as root with its sandbox
      '--disable-gpu',
      '--disable-background-networking', // no internet here: don't try
      '--disable-component-update',
      '--no-first-run',
    ],
  });
  const context = await browser.newContext({ viewport: { width: 800, height: 640 } });
  const alice = await openChat(context, url, 'tab 1');
  const bob = await openChat(context, url, 'tab 2');

  // Tab 1 types and presses Enter; tab 2 shows it, and tab 1's input is cleared.
  const fromAlice = 'Hi from tab 1, sent with Enter';
  await alice.locator('#input').fill(fromAlice);
  await alice.locator('#input').press('Enter');
  await expectLine(bob, 'tab 2', fromAlice);
  await expectLine(alice, 'tab 1', fromAlice);
  if ((await alice.locator('#input').inputValue()) !== '') fail('tab 1: the input was not cleared');

  // Tab 2 answers with the button.
  const fromBob = 'And hello from tab 2, sent with the button';
  await bob.locator('#input').fill(fromBob);
  await bob.locator('#chatButton').click();
  await expectLine(alice, 'tab 1', fromBob);
  await expectLine(bob, 'tab 2', fromBob);

  await bob.screenshot({ path: screenshot });
  console.log(`screenshot of tab 2: ${screenshot}`);
  await browser.close();
  console.log('chat.mjs: PASS: the two tabs chatted');
  process.exit(0);
} catch (error) {
  await browser?.close().catch(() => {});
  fail(error.stack ?? String(error));
}
