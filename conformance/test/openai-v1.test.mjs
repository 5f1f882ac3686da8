// The official OpenAI TypeScript SDK through the proxy on its default, Azure's
// v1 API, compared request for request with the same SDK pointed straight at
// the fake's /openai/v1/, as Microsoft Learn tells v1 users to configure it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { FakeAzure, KEY } from './fake-azure.mjs';
import { startProxy } from './proxy.mjs';
import { comparableBody } from './compare.mjs';

const MAPPING = {
  'gpt-4o': 'gpt4o-deploy',
  'text-embedding-3-small': 'emb-deploy',
  'sora-2': 'sora-deploy',
  'gpt-realtime': 'realtime-deploy',
};

let fake, proxy, viaProxy, azureV1;

before(async () => {
  fake = await new FakeAzure({ deployments: Object.values(MAPPING) }).start();
  proxy = await startProxy(fake.url, {
    AZURE_OPENAI_API_VER: '', // the default
    AZURE_OPENAI_MODEL_MAPPER: Object.entries(MAPPING).map(([m, d]) => `${m}=${d}`).join(','),
  });
  viaProxy = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: KEY, maxRetries: 0 });
  azureV1 = new OpenAI({ baseURL: `${fake.url}/openai/v1`, apiKey: KEY, maxRetries: 0 });
});

after(async () => {
  await proxy?.stop();
  await fake?.close();
});

async function comparable(r) {
  const body = await comparableBody(r);
  return { method: r.method, path: r.path, query: r.query.toString(), body };
}

// same runs one call through the proxy and the matching call straight to the
// fake's v1 API, and asserts the fake received the same requests both ways:
// the proxy names the deployment where the client named the model, and sends
// the key as api-key where the SDK sends a Bearer token.
async function same(callViaProxy, callDirect) {
  fake.take();
  const got = await callViaProxy();
  const proxiedRaw = fake.take();
  const want = await callDirect();
  const directRaw = fake.take();
  assert.equal(proxiedRaw.length, directRaw.length, 'the same number of requests reach Azure');
  for (let i = 0; i < directRaw.length; i++) {
    assert.equal(proxiedRaw[i].headers['api-key'], KEY);
    assert.equal(proxiedRaw[i].headers.authorization, undefined, 'the client Authorization header never reaches Azure');
    assert.equal(directRaw[i].headers.authorization, `Bearer ${KEY}`);
    assert.deepEqual(await comparable(proxiedRaw[i]), await comparable(directRaw[i]));
    assert.ok(proxiedRaw[i].path.startsWith('/openai/v1/'));
  }
  return { got, want, requests: directRaw };
}

test('v1: chat completion, plain and streamed', async () => {
  const params = { messages: [{ role: 'user', content: 'Hi' }], max_completion_tokens: 20 };
  const { got, want, requests } = await same(
    () => viaProxy.chat.completions.create({ model: 'gpt-4o', ...params }),
    () => azureV1.chat.completions.create({ model: 'gpt4o-deploy', ...params }));
  assert.equal(requests[0].path, '/openai/v1/chat/completions');
  assert.equal(requests[0].query.get('api-version'), null);
  assert.deepEqual(got, want);

  const collect = async (stream) => {
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
    return text;
  };
  const { got: text } = await same(
    async () => collect(await viaProxy.chat.completions.create({ model: 'gpt-4o', ...params, stream: true })),
    async () => collect(await azureV1.chat.completions.create({ model: 'gpt4o-deploy', ...params, stream: true })));
  assert.equal(text, 'Hello there');
});

test('v1: embeddings', async () => {
  const { got, want } = await same(
    () => viaProxy.embeddings.create({ model: 'text-embedding-3-small', input: 'hello' }),
    () => azureV1.embeddings.create({ model: 'emb-deploy', input: 'hello' }));
  assert.deepEqual(got, want);
});

test('v1: stored completions list', async () => {
  const list = async (client) => {
    const ids = [];
    for await (const c of client.chat.completions.list({ limit: 10 })) ids.push(c.id);
    return ids;
  };
  const { got, requests } = await same(() => list(viaProxy), () => list(azureV1));
  assert.equal(requests[0].method, 'GET');
  assert.equal(requests[0].path, '/openai/v1/chat/completions');
  assert.deepEqual(got, ['chatcmpl-1']);
});

test('v1: video create (Sora 2, multipart)', async () => {
  const { got, requests } = await same(
    () => viaProxy.videos.create({ model: 'sora-2', prompt: 'a cat on a piano', seconds: '4' }),
    () => azureV1.videos.create({ model: 'sora-deploy', prompt: 'a cat on a piano', seconds: '4' }));
  assert.equal(requests[0].path, '/openai/v1/videos');
  assert.ok((requests[0].headers['content-type'] || '').startsWith('multipart/form-data'));
  assert.equal(got.id, 'video_1');
  assert.equal(got.model, 'sora-deploy');
});

test('v1: conversations create', async () => {
  const { got, requests } = await same(
    () => viaProxy.conversations.create({ metadata: { topic: 'demo' } }),
    () => azureV1.conversations.create({ metadata: { topic: 'demo' } }));
  assert.equal(requests[0].path, '/openai/v1/conversations');
  assert.equal(got.id, 'conv_1');
});

test('v1: responses.compact', async () => {
  const { got, requests } = await same(
    () => viaProxy.responses.compact({ model: 'gpt-4o', input: 'a long conversation' }),
    () => azureV1.responses.compact({ model: 'gpt4o-deploy', input: 'a long conversation' }));
  assert.equal(requests[0].path, '/openai/v1/responses/compact');
  assert.equal(got.object, 'response.compaction');
});

test('v1: realtime client secret (session.model is the deployment)', async () => {
  const session = { type: 'realtime', instructions: 'Be brief.' };
  const { got, requests } = await same(
    () => viaProxy.realtime.clientSecrets.create({ session: { ...session, model: 'gpt-realtime' } }),
    () => azureV1.realtime.clientSecrets.create({ session: { ...session, model: 'realtime-deploy' } }));
  assert.equal(requests[0].path, '/openai/v1/realtime/client_secrets');
  assert.equal(got.value, 'ek_fake');
});
