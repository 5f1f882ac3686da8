// LangChain JS (@langchain/openai) with configuration.baseURL = the proxy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { FakeAzure, KEY } from './fake-azure.mjs';
import { startProxy } from './proxy.mjs';

let fake, proxy, configuration;

before(async () => {
  fake = await new FakeAzure({ deployments: ['gpt4o-deploy', 'emb-deploy'] }).start();
  proxy = await startProxy(fake.url, { AZURE_OPENAI_MODEL_MAPPER: 'gpt-4o=gpt4o-deploy,text-embedding-3-small=emb-deploy' });
  configuration = { baseURL: `${proxy.url}/v1` };
});

after(async () => {
  await proxy?.stop();
  await fake?.close();
});

function onlyRequest() {
  const requests = fake.take();
  assert.equal(requests.length, 1);
  const r = requests[0];
  assert.equal(r.headers['api-key'], KEY);
  assert.equal(r.headers.authorization, undefined);
  return { ...r, json: JSON.parse(r.body.toString()) };
}

test('ChatOpenAI invoke', async () => {
  fake.take();
  const chat = new ChatOpenAI({ model: 'gpt-4o', apiKey: KEY, configuration, maxRetries: 0 });
  const message = await chat.invoke('Hi');
  assert.equal(message.content, 'Hello there');
  const r = onlyRequest();
  assert.equal(r.path, '/openai/deployments/gpt4o-deploy/chat/completions');
  assert.equal(r.query.get('api-version'), '2024-10-21');
  assert.equal(r.json.model, 'gpt-4o');
  assert.deepEqual(r.json.messages, [{ role: 'user', content: 'Hi' }]);
});

test('ChatOpenAI stream', async () => {
  fake.take();
  const chat = new ChatOpenAI({ model: 'gpt-4o', apiKey: KEY, configuration, maxRetries: 0 });
  let text = '';
  let chunks = 0;
  for await (const chunk of await chat.stream('Hi')) {
    text += chunk.content;
    chunks++;
  }
  assert.equal(text, 'Hello there');
  assert.ok(chunks >= 2, `streamed in ${chunks} chunks`);
  const r = onlyRequest();
  assert.equal(r.path, '/openai/deployments/gpt4o-deploy/chat/completions');
  assert.equal(r.json.stream, true);
});

test('OpenAIEmbeddings embedDocuments', async () => {
  fake.take();
  const embeddings = new OpenAIEmbeddings({ model: 'text-embedding-3-small', apiKey: KEY, configuration, maxRetries: 0 });
  const vectors = await embeddings.embedDocuments(['hello', 'world']);
  assert.deepEqual(vectors, [[0.25, -0.5, 1], [0.5, -0.5, 1]]);
  const r = onlyRequest();
  assert.equal(r.path, '/openai/deployments/emb-deploy/embeddings');
  assert.deepEqual(r.json.input, ['hello', 'world']);
});
