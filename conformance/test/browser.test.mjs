// A browser client, as ChatGPT-Next-Web is one: headless Chromium loads a page
// from another origin than the proxy, and the page streams a chat completion
// with fetch and a ReadableStream reader. The fake sends each event only after
// the page has reported reading the one before, so passing proves the proxy
// delivers the stream event by event, through CORS, into the browser.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeAzure, KEY } from './fake-azure.mjs';
import { startProxy } from './proxy.mjs';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const STEP_TIMEOUT = 15000; // only reached when the proxy holds events back

let fake, proxy, pages;
const acks = new Map(); // event index -> resolve
let result;

function ackFor(i) {
  return new Promise((resolve) => {
    acks.set(i, resolve);
    setTimeout(resolve, STEP_TIMEOUT).unref();
  });
}

function page(proxyURL) {
  return `<!doctype html><meta charset="utf-8"><title>stream</title><script type="module">
  const report = (r) => fetch('/result', { method: 'POST', body: JSON.stringify(r) });
  try {
    const res = await fetch(${JSON.stringify(proxyURL)} + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'Authorization': 'Bearer ${KEY}', 'Content-Type': 'application/json', 'x-stainless-os': 'browser' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'Hi' }] }),
    });
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '', text = '', n = 0;
    const events = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\\n\\n')) >= 0) {
        const data = buffer.slice(0, end).replace(/^data: /, '');
        buffer = buffer.slice(end + 2);
        events.push(data);
        if (data !== '[DONE]') text += JSON.parse(data).choices[0]?.delta?.content ?? '';
        await fetch('/ack?n=' + n++);
      }
    }
    await report({ status: res.status, requestId: res.headers.get('apim-request-id'), events: events.length, text });
  } catch (e) {
    await report({ error: String(e) });
  }
  </script>`;
}

before(async () => {
  fake = await new FakeAzure({ deployments: ['gpt4o-deploy'] }).start();
  // The proxy drops Azure's first chunk, so the page's event n is the fake's n + 1.
  fake.onEvent = (i) => (i === 0 ? Promise.resolve() : ackFor(i - 1));
  proxy = await startProxy(fake.url, { AZURE_OPENAI_MODEL_MAPPER: 'gpt-4o=gpt4o-deploy' });
  let resolveResult;
  result = new Promise((resolve) => { resolveResult = resolve; });
  pages = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://page');
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(page(proxy.url));
    }
    if (url.pathname === '/ack') {
      acks.get(Number(url.searchParams.get('n')))?.();
      return res.end('ok');
    }
    if (url.pathname === '/result') {
      let body = '';
      for await (const c of req) body += c;
      resolveResult(JSON.parse(body));
      return res.end('ok');
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => pages.listen(0, '127.0.0.1', resolve));
});

after(async () => {
  await proxy?.stop();
  await fake?.close();
  pages?.closeAllConnections();
  pages?.close();
});

test('headless Chromium streams a chat completion across origins, event by event', { skip: !CHROMIUM && !process.env.CI && 'no Chromium (apt-get install chromium)' }, async () => {
  assert.ok(CHROMIUM, 'Chromium is installed (.ci/run installs it)');
  const profile = mkdtempSync(join(tmpdir(), 'chromium-'));
  const browser = spawn(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--remote-debugging-port=0', `--user-data-dir=${profile}`,
    `http://127.0.0.1:${pages.address().port}/`,
  ], { stdio: 'ignore', detached: true }); // its own process group, so its helpers go with it
  try {
    const got = await Promise.race([
      result,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the page reported nothing')), 60000).unref()),
    ]);
    // Azure's 5 chunks and [DONE], less the empty first chunk the proxy drops.
    assert.deepEqual(got, { status: 200, requestId: 'apim-stream', events: 5, text: 'Hello there' });
    // The page's origin differs from the proxy's: the browser sent a preflight,
    // which the proxy answered itself.
    assert.match(proxy.logs(), /method=OPTIONS path=\/v1\/chat\/completions status=204/);
    const upstream = fake.take();
    assert.equal(upstream.length, 1);
    assert.equal(upstream[0].method, 'POST');
    assert.equal(upstream[0].path, '/openai/deployments/gpt4o-deploy/chat/completions');
  } finally {
    const exited = browser.exitCode !== null || browser.signalCode !== null
      ? Promise.resolve()
      : new Promise((resolve) => browser.once('exit', resolve));
    try { process.kill(-browser.pid, 'SIGKILL'); } catch { /* already gone */ }
    await exited;
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    } catch { /* a temporary directory; not worth failing the test over */ }
  }
});
