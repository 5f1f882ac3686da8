// Named clients with limits, as the official OpenAI SDK meets them: a 429
// with retry-after-ms that the SDK waits out before it retries, a model the
// client may not call, and a stream whose usage the proxy asks Azure for
// without the client seeing it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { FakeAzure, KEY } from './fake-azure.mjs';
import { startProxy } from './proxy.mjs';

const TEAM_KEY = 'sk-team-a-0123456789';
const TOKENS_KEY = 'sk-team-b-0123456789';
let fake, proxy;

before(async () => {
  fake = await new FakeAzure({ deployments: ['gpt4o-deploy', 'gpt4-deploy'] }).start();
  const config = join(mkdtempSync(join(tmpdir(), 'aop-clients-')), 'config.json');
  writeFileSync(config, JSON.stringify({
    backends: { east: { endpoint: fake.url, api_key_env: 'AZ_KEY' } },
    models: { 'gpt-4o': [{ backend: 'east', deployment: 'gpt4o-deploy' }], 'gpt-4': [{ backend: 'east', deployment: 'gpt4-deploy' }] },
    clients: {
      'team-a': { key_env: 'TEAM_A_KEY', models: ['gpt-4o'], limits: { requests_per_minute: 60, tokens_per_minute: 100000 } },
      'team-b': { key_env: 'TEAM_B_KEY', limits: { tokens_per_day: 1000000 } },
    },
  }));
  proxy = await startProxy(fake.url, { AZURE_OPENAI_PROXY_CONFIG: config, AZ_KEY: KEY, TEAM_A_KEY: TEAM_KEY, TEAM_B_KEY: TOKENS_KEY });
});

after(async () => {
  await proxy?.stop();
  await fake?.close();
});

// client is the SDK with a fetch that notes each answer's status, its
// retry-after-ms and when it came.
function client(maxRetries, apiKey = TEAM_KEY) {
  const answers = [];
  const fetchNoting = async (url, init) => {
    const resp = await fetch(url, init);
    answers.push({ status: resp.status, retryAfterMs: Number(resp.headers.get('retry-after-ms')), at: performance.now(), headers: resp.headers });
    return resp;
  };
  return { sdk: new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey, maxRetries, fetch: fetchNoting }), answers };
}

const params = { model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] };

test('a limited client: the SDK waits the retry-after-ms it was sent, then succeeds', async () => {
  const { sdk: noRetry } = client(0);
  // Spend the minute's 60 requests.
  for (let i = 0; i < 60; i++) await noRetry.chat.completions.create(params);
  const { sdk, answers } = client(1);
  const started = performance.now();
  const got = await sdk.chat.completions.create(params);
  assert.equal(got.choices[0].message.content, 'Hello there');
  assert.equal(answers.length, 2, 'one 429, then the retry');
  assert.equal(answers[0].status, 429);
  assert.ok(answers[0].retryAfterMs > 0 && answers[0].retryAfterMs <= 1001, `retry-after-ms ${answers[0].retryAfterMs}`);
  assert.equal(answers[0].headers.get('x-ratelimit-limit-requests'), '60');
  assert.equal(answers[0].headers.get('x-ratelimit-remaining-requests'), '0');
  assert.equal(answers[1].status, 200);
  const waited = answers[1].at - started;
  assert.ok(waited >= answers[0].retryAfterMs, `the SDK retried after ${waited} ms, before the ${answers[0].retryAfterMs} ms it was sent`);
});

test('a limited client: a 429 reaches a client that does not retry as RateLimitError', async () => {
  const { sdk } = client(0);
  // Spend the requests again (the previous test left the bucket nearly full).
  let error;
  for (let i = 0; i < 70 && !error; i++) {
    try { await sdk.chat.completions.create(params); } catch (e) { error = e; }
  }
  assert.ok(error instanceof OpenAI.RateLimitError, `got ${error}`);
  assert.equal(error.code, 'rate_limit_exceeded');
  assert.equal(error.type, 'requests');
  assert.match(error.message, /requests per minute \(RPM\)/);
});

test('a client held to some models: others are PermissionDeniedError, and /v1/models lists its own', async () => {
  await new Promise((r) => setTimeout(r, 1100)); // a request drains from team-a's minute
  const { sdk } = client(0);
  await assert.rejects(sdk.chat.completions.create({ ...params, model: 'gpt-4' }), (e) => {
    assert.ok(e instanceof OpenAI.PermissionDeniedError, `got ${e}`);
    assert.equal(e.code, 'model_not_allowed');
    assert.equal(e.param, 'model');
    return true;
  });
  const ids = [];
  for await (const m of sdk.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['gpt-4o']);
});

test('a token-limited stream is counted without the client seeing the usage chunk', async () => {
  const { sdk } = client(0, TOKENS_KEY);
  fake.take();
  const chunks = [];
  for await (const chunk of await sdk.chat.completions.create({ ...params, stream: true })) chunks.push(chunk);
  const sent = JSON.parse(fake.take()[0].body.toString());
  assert.deepEqual(sent.stream_options, { include_usage: true }, 'the proxy asks Azure for the usage');
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), 'Hello there');
  for (const c of chunks) {
    assert.equal(c.choices.length, 1, 'no usage chunk (empty choices) reaches the client');
    assert.ok(!('usage' in c), 'no "usage": null reaches the client');
  }
  const usage = await (await fetch(`${proxy.url}/v1/proxy/usage`, { headers: { authorization: `Bearer ${TOKENS_KEY}` } })).json();
  assert.equal(usage.data[0].client, 'team-b');
  assert.equal(usage.data[0].today.requests, 1);
  assert.equal(usage.data[0].today.prompt_tokens, 9, JSON.stringify(usage));
  assert.equal(usage.data[0].today.completion_tokens, 2, JSON.stringify(usage));
  assert.ok(!proxy.logs().includes(TEAM_KEY) && !proxy.logs().includes(TOKENS_KEY), 'client keys are not logged');
});
