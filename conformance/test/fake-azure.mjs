// A fake Azure OpenAI resource for the conformance suite. It behaves like
// Azure where clients can tell (401 without a key, 404 "Resource not found"
// without api-version, 404 DeploymentNotFound, a first stream chunk with empty
// choices and prompt_filter_results) and records every request it receives.
import http from 'node:http';

export const KEY = 'azure-key-0123456789';

export class FakeAzure {
  constructor({ deployments }) {
    this.deployments = new Set(deployments);
    this.requests = [];
    this.files = new Map();
    this.onEvent = null; // set by a test to step a stream: async (index) => void
    this.server = http.createServer((req, res) => this.#handle(req, res));
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  close() {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(resolve));
  }

  take() {
    const r = this.requests;
    this.requests = [];
    return r;
  }

  async #handle(req, res) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url, 'http://fake');
    this.requests.push({ method: req.method, path: url.pathname, query: url.searchParams, headers: req.headers, body });

    const json = (status, value, headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', 'apim-request-id': `apim-${this.requests.length}`, ...headers });
      res.end(JSON.stringify(value));
    };
    // Azure's v1 API takes the key as api-key or as a Bearer token (Microsoft
    // Learn, Azure OpenAI v1 REST reference), and no dated api-version.
    if (url.pathname.startsWith('/openai/v1/') && req.headers.authorization === `Bearer ${KEY}`) {
      return this.#v1Op(url, req, body, res, json);
    }
    if (!req.headers['api-key']) {
      return json(401, { error: { code: '401', message: 'Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.' } });
    }
    if (url.pathname.startsWith('/openai/v1/')) {
      return this.#v1Op(url, req, body, res, json);
    }
    if (!url.searchParams.get('api-version')) {
      return json(404, { error: { code: '404', message: 'Resource not found' } });
    }
    const m = url.pathname.match(/^\/openai\/deployments\/([^/]+)\/(.+)$/);
    if (m) {
      const [, deployment, op] = m;
      if (!this.deployments.has(deployment)) {
        return json(404, { error: { code: 'DeploymentNotFound', message: 'The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.' } });
      }
      return this.#deploymentOp(op, deployment, req, body, res, json);
    }
    return this.#resourceOp(url, req, body, res, json);
  }

  async #deploymentOp(op, deployment, req, body, res, json) {
    const isJSON = (req.headers['content-type'] || '').startsWith('application/json');
    const input = isJSON ? JSON.parse(body.toString()) : {};
    switch (op) {
      case 'chat/completions':
        if (input.stream) return this.#chatStream(input, res);
        return json(200, chatCompletion(input));
      case 'completions':
        return json(200, { id: 'cmpl-1', object: 'text_completion', created: 1, model: 'gpt-35-turbo-instruct', choices: [{ text: ' world', index: 0, finish_reason: 'stop', logprobs: null }], usage: usage() });
      case 'embeddings': {
        const inputs = Array.isArray(input.input) ? input.input : [input.input];
        const data = inputs.map((_, i) => {
          const vector = [0.25 * (i + 1), -0.5, 1];
          const embedding = input.encoding_format === 'base64'
            ? Buffer.from(new Float32Array(vector).buffer).toString('base64')
            : vector;
          return { object: 'embedding', index: i, embedding };
        });
        return json(200, { object: 'list', data, model: 'text-embedding-3-small', usage: { prompt_tokens: 2, total_tokens: 2 } });
      }
      case 'images/generations':
        return json(200, { created: 1, data: [{ url: 'https://fake/image.png', revised_prompt: input.prompt }] });
      case 'audio/transcriptions':
      case 'audio/translations':
        return json(200, { text: 'hello from the fake' });
      case 'audio/speech':
        res.writeHead(200, { 'content-type': 'audio/mpeg' });
        return res.end(SPEECH);
      default:
        return json(404, { error: { code: '404', message: 'Resource not found' } });
    }
  }

  async #chatStream(input, res) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'apim-request-id': 'apim-stream' });
    const base = { id: 'chatcmpl-s', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o-2024-08-06', system_fingerprint: 'fp' };
    const events = [
      { id: '', object: '', created: 0, model: '', choices: [], prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }] },
      { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { content: 'Hello' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: { content: ' there' }, finish_reason: null }] },
      { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] },
    ];
    if (input.stream_options?.include_usage) {
      // "All other chunks will also include a usage field, but with a null
      // value" (chatCompletionStreamOptions, the 2024-10-21 spec).
      for (const e of events) e.usage = null;
      events.push({ ...base, choices: [], usage: usage() });
    }
    for (let i = 0; i < events.length; i++) {
      res.write(`data: ${JSON.stringify(events[i])}\n\n`);
      if (this.onEvent) await this.onEvent(i);
    }
    res.end('data: [DONE]\n\n');
  }

  // #v1Op is Azure's v1 API: OpenAI's paths under /openai/v1/, the
  // deployment in the body's model, api-version absent, v1 or preview.
  async #v1Op(url, req, body, res, json) {
    const version = url.searchParams.get('api-version');
    if (version && version !== 'v1' && version !== 'preview') {
      return json(400, { error: { code: 'BadRequest', message: 'API version not supported' } });
    }
    const op = url.pathname.slice('/openai/v1/'.length);
    const type = req.headers['content-type'] || '';
    const input = type.startsWith('application/json') ? JSON.parse(body.toString()) : {};
    const deploymentNotFound = () => json(404, { error: { code: 'DeploymentNotFound', message: 'The API deployment for this resource does not exist.' } });
    switch (`${req.method} ${op}`) {
      case 'POST chat/completions':
      case 'POST completions':
      case 'POST embeddings':
        if (!this.deployments.has(input.model)) return deploymentNotFound();
        return this.#deploymentOp(op, input.model, req, body, res, json);
      case 'GET chat/completions': // stored completions
        return json(200, { object: 'list', data: [chatCompletion({})], first_id: 'chatcmpl-1', last_id: 'chatcmpl-1', has_more: false });
      case 'POST videos': {
        const form = await new Request('http://x', { method: 'POST', headers: { 'content-type': type }, body }).formData();
        if (!this.deployments.has(form.get('model'))) return deploymentNotFound();
        return json(200, { id: 'video_1', object: 'video', model: form.get('model'), status: 'queued', progress: 0, created_at: 1, completed_at: null, expires_at: null, prompt: form.get('prompt'), seconds: '4', size: '720x1280', remixed_from_video_id: null, error: null });
      }
      case 'POST conversations':
        return json(200, { id: 'conv_1', object: 'conversation', created_at: 1, metadata: input.metadata ?? {} });
      case 'POST responses/compact':
        if (!this.deployments.has(input.model)) return deploymentNotFound();
        return json(200, { id: 'resp_c1', object: 'response.compaction', created_at: 1, output: [], usage: { input_tokens: 5, output_tokens: 1, total_tokens: 6, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } } });
      case 'POST realtime/client_secrets':
        if (!this.deployments.has(input.session?.model)) return deploymentNotFound();
        return json(200, { value: 'ek_fake', expires_at: 1, session: input.session });
      default:
        return json(404, { error: { code: '404', message: 'Resource not found' } });
    }
  }

  async #resourceOp(url, req, body, res, json) {
    const path = url.pathname;
    if (path === '/openai/models' && req.method === 'GET') {
      return json(200, { object: 'list', data: [{ id: 'gpt-4o-2024-08-06', object: 'model', created: 1 }] });
    }
    if (path === '/openai/files' && req.method === 'POST') {
      const form = await new Request('http://x', { method: 'POST', headers: { 'content-type': req.headers['content-type'] }, body }).formData();
      const file = form.get('file');
      const id = `file-${this.files.size + 1}`;
      const obj = { id, object: 'file', bytes: file.size, created_at: 1, filename: file.name, purpose: form.get('purpose'), status: 'processed' };
      this.files.set(id, obj);
      return json(200, obj);
    }
    if (path === '/openai/files' && req.method === 'GET') {
      return json(200, { object: 'list', data: [...this.files.values()], has_more: false, first_id: null, last_id: null });
    }
    const file = path.match(/^\/openai\/files\/([^/]+)$/);
    if (file && req.method === 'GET') {
      return this.files.has(file[1]) ? json(200, this.files.get(file[1])) : json(404, { error: { code: 'fileNotFound', message: 'File not found' } });
    }
    if (path === '/openai/batches' && req.method === 'POST') {
      const input = JSON.parse(body.toString());
      return json(200, { id: 'batch_1', object: 'batch', endpoint: input.endpoint, input_file_id: input.input_file_id, completion_window: input.completion_window, status: 'validating', created_at: 1, errors: null });
    }
    if (path === '/openai/responses' && req.method === 'POST') {
      const input = JSON.parse(body.toString());
      if (!this.deployments.has(input.model)) {
        return json(404, { error: { code: 'DeploymentNotFound', message: 'The API deployment for this resource does not exist.' } });
      }
      const response = responseObject(input);
      if (!input.stream) return json(200, response);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const inProgress = { ...response, status: 'in_progress', output: [] };
      const events = [
        { type: 'response.created', sequence_number: 0, response: inProgress },
        { type: 'response.output_text.delta', sequence_number: 1, item_id: 'msg_1', output_index: 0, content_index: 0, delta: 'Hello', logprobs: [] },
        { type: 'response.output_text.delta', sequence_number: 2, item_id: 'msg_1', output_index: 0, content_index: 0, delta: ' there', logprobs: [] },
        { type: 'response.completed', sequence_number: 3, response },
      ];
      for (const ev of events) res.write(`event: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`);
      return res.end();
    }
    return json(404, { error: { code: '404', message: 'Resource not found' } });
  }
}

export const SPEECH = Buffer.from([0x49, 0x44, 0x33, 0x04, 0x00, 0x00, 0xff, 0xfb, 0x90, 0x64, 0x00, 0x01, 0x02, 0x03]);

function usage() {
  return { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 };
}

function chatCompletion(input) {
  const message = input.tools
    ? { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: input.tools[0].function.name, arguments: '{"city":"Paris"}' } }] }
    : { role: 'assistant', content: 'Hello there', refusal: null };
  return {
    id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'gpt-4o-2024-08-06', system_fingerprint: 'fp',
    prompt_filter_results: [{ prompt_index: 0, content_filter_results: {} }],
    choices: [{ index: 0, message, finish_reason: input.tools ? 'tool_calls' : 'stop', logprobs: null, content_filter_results: {} }],
    usage: usage(),
  };
}

function responseObject(input) {
  return {
    id: 'resp_1', object: 'response', created_at: 1, status: 'completed', model: input.model, error: null, incomplete_details: null,
    instructions: null, metadata: {}, parallel_tool_calls: true, temperature: 1, tool_choice: 'auto', tools: [], top_p: 1,
    output: [{ type: 'message', id: 'msg_1', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text: 'Hello there', annotations: [] }] }],
    usage: { input_tokens: 5, output_tokens: 2, total_tokens: 7, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } },
  };
}
