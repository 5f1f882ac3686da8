// The official OpenAI TypeScript SDK through the proxy, compared request for
// request with the same SDK's AzureOpenAI client pointed straight at the fake.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { AzureOpenAI, toFile } from 'openai';
import { FakeAzure, KEY, SPEECH } from './fake-azure.mjs';
import { startProxy } from './proxy.mjs';
import { comparableBody } from './compare.mjs';

const GA = '2024-10-21';
const PREVIEW = '2025-04-01-preview';
// OpenAI model name -> Azure deployment, as AZURE_OPENAI_MODEL_MAPPER says.
const MAPPING = {
  'gpt-4o': 'gpt4o-deploy',
  'gpt-3.5-turbo-instruct': 'instruct-deploy',
  'text-embedding-3-small': 'emb-deploy',
  'dall-e-3': 'dalle-deploy',
  'whisper-1': 'whisper-deploy',
  'tts-1': 'tts-deploy',
  'gpt-image-1': 'image-deploy',
};

let fake, proxy, viaProxy, azure, azurePreview;

before(async () => {
  fake = await new FakeAzure({ deployments: Object.values(MAPPING) }).start();
  proxy = await startProxy(fake.url, {
    AZURE_OPENAI_MODEL_MAPPER: Object.entries(MAPPING).map(([m, d]) => `${m}=${d}`).join(','),
  });
  viaProxy = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: KEY, maxRetries: 0 });
  azure = new AzureOpenAI({ endpoint: fake.url, apiKey: KEY, apiVersion: GA, maxRetries: 0 });
  azurePreview = new AzureOpenAI({ endpoint: fake.url, apiKey: KEY, apiVersion: PREVIEW, maxRetries: 0 });
});

after(async () => {
  await proxy?.stop();
  await fake?.close();
});

// What the fake saw, in a form two clients' requests can be compared in.
async function comparable(r) {
  const body = await comparableBody(r);
  return {
    method: r.method,
    path: r.path,
    apiVersion: r.query.get('api-version'),
    apiKey: r.headers['api-key'],
    authorization: r.headers.authorization ?? null,
    body,
  };
}

// same runs one call through the proxy and the matching call with Azure's own
// client, and asserts the fake received the same requests both ways, but for
// the differences named in `expect`.
async function same(callViaProxy, callDirect, expect = {}) {
  fake.take();
  const got = await callViaProxy();
  const proxied = await Promise.all(fake.take().map(comparable));
  const want = await callDirect();
  const direct = await Promise.all(fake.take().map(comparable));
  assert.equal(proxied.length, direct.length, 'the same number of requests reach Azure');
  for (let i = 0; i < direct.length; i++) {
    if (expect.bodyModel) {
      // Deployment routes: Azure reads the deployment from the path, so the
      // proxy forwards the body byte for byte, with the OpenAI model name.
      assert.equal(direct[i].body.model, MAPPING[expect.bodyModel]);
      assert.equal(proxied[i].body.model, expect.bodyModel);
      proxied[i].body.model = direct[i].body.model;
    }
    assert.deepEqual(proxied[i], direct[i]);
    assert.equal(proxied[i].apiKey, KEY);
    assert.equal(proxied[i].authorization, null, 'the client Authorization header never reaches Azure');
  }
  return { got, want, requests: direct };
}

test('chat completion', async () => {
  const params = { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }], temperature: 0.2, max_tokens: 20 };
  const { got, want, requests } = await same(
    () => viaProxy.chat.completions.create({ model: 'gpt-4o', ...params }),
    () => azure.chat.completions.create({ model: 'gpt4o-deploy', ...params }),
    { bodyModel: 'gpt-4o' });
  assert.equal(requests[0].path, '/openai/deployments/gpt4o-deploy/chat/completions');
  assert.equal(requests[0].apiVersion, GA);
  assert.equal(got.choices[0].message.content, 'Hello there');
  assert.deepEqual(got, want);
});

async function collectStream(stream) {
  let text = '';
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.delta?.content ?? '';
    usage = chunk.usage ?? usage;
  }
  return { text, usage, chunks };
}

test('chat completion, streamed with for await, with include_usage', async () => {
  const params = { messages: [{ role: 'user', content: 'Hi' }], stream: true, stream_options: { include_usage: true } };
  const { got, want } = await same(
    async () => collectStream(await viaProxy.chat.completions.create({ model: 'gpt-4o', ...params })),
    async () => collectStream(await azure.chat.completions.create({ model: 'gpt4o-deploy', ...params })),
    { bodyModel: 'gpt-4o' });
  assert.equal(got.text, 'Hello there');
  assert.deepEqual(got.usage, { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 });
  // Difference on purpose: the proxy drops Azure's first chunk (empty choices,
  // prompt_filter_results), which OpenAI never sends; AzureOpenAI passes it on.
  assert.equal(got.chunks, want.chunks - 1);
  assert.deepEqual({ ...got, chunks: 0 }, { ...want, chunks: 0 });
});

test('chat completion with tools (function calling)', async () => {
  const params = {
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
    tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather by city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }],
    tool_choice: 'auto',
  };
  const { got, want } = await same(
    () => viaProxy.chat.completions.create({ model: 'gpt-4o', ...params }),
    () => azure.chat.completions.create({ model: 'gpt4o-deploy', ...params }),
    { bodyModel: 'gpt-4o' });
  assert.equal(got.choices[0].message.tool_calls[0].function.name, 'get_weather');
  assert.equal(got.choices[0].message.tool_calls[0].function.arguments, '{"city":"Paris"}');
  assert.deepEqual(got, want);
});

test('completions (legacy)', async () => {
  const { got, requests } = await same(
    () => viaProxy.completions.create({ model: 'gpt-3.5-turbo-instruct', prompt: 'Say hello', max_tokens: 5 }),
    () => azure.completions.create({ model: 'instruct-deploy', prompt: 'Say hello', max_tokens: 5 }),
    { bodyModel: 'gpt-3.5-turbo-instruct' });
  assert.equal(requests[0].path, '/openai/deployments/instruct-deploy/completions');
  assert.equal(got.choices[0].text, ' world');
});

test('embeddings of a string and of an array', async () => {
  for (const input of ['hello', ['hello', 'world']]) {
    const { got, want, requests } = await same(
      () => viaProxy.embeddings.create({ model: 'text-embedding-3-small', input }),
      () => azure.embeddings.create({ model: 'emb-deploy', input }),
      { bodyModel: 'text-embedding-3-small' });
    assert.equal(requests[0].path, '/openai/deployments/emb-deploy/embeddings');
    assert.equal(got.data.length, Array.isArray(input) ? 2 : 1);
    assert.deepEqual(got.data[0].embedding, [0.25, -0.5, 1]);
    assert.deepEqual(got, want);
  }
});

test('images.generate', async () => {
  const { got, requests } = await same(
    () => viaProxy.images.generate({ model: 'dall-e-3', prompt: 'a cat', n: 1, size: '1024x1024' }),
    () => azure.images.generate({ model: 'dalle-deploy', prompt: 'a cat', n: 1, size: '1024x1024' }),
    { bodyModel: 'dall-e-3' });
  assert.equal(requests[0].path, '/openai/deployments/dalle-deploy/images/generations');
  assert.equal(got.data[0].url, 'https://fake/image.png');
});

const WAV = Buffer.concat([Buffer.from('RIFF\x24\x00\x00\x00WAVEfmt '), Buffer.alloc(4096, 7)]);

test('audio.transcriptions.create with a real file upload', async () => {
  const { got, requests } = await same(
    async () => viaProxy.audio.transcriptions.create({ model: 'whisper-1', file: await toFile(WAV, 'hello.wav'), language: 'en' }),
    async () => azure.audio.transcriptions.create({ model: 'whisper-deploy', file: await toFile(WAV, 'hello.wav'), language: 'en' }),
    { bodyModel: 'whisper-1' });
  assert.equal(requests[0].path, '/openai/deployments/whisper-deploy/audio/transcriptions');
  assert.equal(requests[0].body.file.bytes, WAV.toString('base64'));
  assert.equal(got.text, 'hello from the fake');
});

test('audio.speech.create returns the binary body', async () => {
  const params = { input: 'hello', voice: 'alloy', response_format: 'mp3' };
  const { got, requests } = await same(
    async () => Buffer.from(await (await viaProxy.audio.speech.create({ model: 'tts-1', ...params })).arrayBuffer()),
    async () => Buffer.from(await (await azurePreview.audio.speech.create({ model: 'tts-deploy', ...params })).arrayBuffer()),
    { bodyModel: 'tts-1' });
  assert.equal(requests[0].path, '/openai/deployments/tts-deploy/audio/speech');
  assert.equal(requests[0].apiVersion, PREVIEW);
  assert.deepEqual(got, SPEECH);
});

test('files.create, list, retrieve; batches.create', async () => {
  const jsonl = Buffer.from('{"custom_id":"1","method":"POST","url":"/chat/completions","body":{"model":"gpt4o-deploy","messages":[]}}\n');
  const { got: created, requests } = await same(
    async () => viaProxy.files.create({ file: await toFile(jsonl, 'batch.jsonl'), purpose: 'batch' }),
    async () => azure.files.create({ file: await toFile(jsonl, 'batch.jsonl'), purpose: 'batch' }));
  assert.equal(requests[0].path, '/openai/files');
  assert.equal(requests[0].body.file.bytes, jsonl.toString('base64'));
  assert.equal(created.filename, 'batch.jsonl');

  const { got: list } = await same(() => viaProxy.files.list(), () => azure.files.list());
  assert.ok(list.data.some((f) => f.id === created.id));

  const { got: retrieved } = await same(() => viaProxy.files.retrieve(created.id), () => azure.files.retrieve(created.id));
  assert.equal(retrieved.id, created.id);

  const params = { input_file_id: created.id, endpoint: '/v1/chat/completions', completion_window: '24h' };
  const { got: batch, requests: batchRequests } = await same(() => viaProxy.batches.create(params), () => azure.batches.create(params));
  assert.equal(batchRequests[0].path, '/openai/batches');
  assert.equal(batch.status, 'validating');
});

test('responses.create, plain and streamed', async () => {
  // Azure reads the deployment from the body here, so the proxy rewrites
  // model: both ways, the bodies are equal.
  const { got, requests } = await same(
    () => viaProxy.responses.create({ model: 'gpt-4o', input: 'Hi', instructions: 'Be brief.' }),
    () => azurePreview.responses.create({ model: 'gpt4o-deploy', input: 'Hi', instructions: 'Be brief.' }));
  assert.equal(requests[0].path, '/openai/responses');
  assert.equal(requests[0].apiVersion, PREVIEW);
  assert.equal(requests[0].body.model, 'gpt4o-deploy');
  assert.equal(got.output_text, 'Hello there');

  const collect = async (stream) => {
    const types = [];
    let text = '';
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
    }
    return { types, text };
  };
  const { got: streamed, want } = await same(
    async () => collect(await viaProxy.responses.create({ model: 'gpt-4o', input: 'Hi', stream: true })),
    async () => collect(await azurePreview.responses.create({ model: 'gpt4o-deploy', input: 'Hi', stream: true })));
  assert.equal(streamed.text, 'Hello there');
  assert.deepEqual(streamed.types, ['response.created', 'response.output_text.delta', 'response.output_text.delta', 'response.completed']);
  assert.deepEqual(streamed, want);
});

test('models.list is answered by the proxy (difference: Azure\'s client asks Azure)', async () => {
  fake.take();
  const ids = [];
  for await (const m of viaProxy.models.list()) ids.push(m.id);
  assert.deepEqual(ids, Object.keys(MAPPING));
  assert.equal(fake.take().length, 0, 'models.list does not reach Azure');
  const model = await viaProxy.models.retrieve('gpt-4o');
  assert.equal(model.id, 'gpt-4o');
});

test('Azure errors reach the SDK as Azure sent them', async () => {
  await assert.rejects(
    viaProxy.chat.completions.create({ model: 'gpt-5-not-deployed', messages: [{ role: 'user', content: 'Hi' }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404 && err.code === 'DeploymentNotFound');
  await assert.rejects(
    viaProxy.chat.completions.create({ model: '../admin', messages: [] }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.param === 'model');
});
