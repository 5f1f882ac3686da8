// What the fake saw of a request's body, in a form two clients' requests can
// be compared in: JSON parsed, multipart forms by field (their boundaries
// differ), anything else as base64.
export async function comparableBody(r) {
  const type = r.headers['content-type'] || '';
  if (r.body.length === 0) return null;
  if (type.startsWith('application/json')) return JSON.parse(r.body.toString());
  if (type.startsWith('multipart/form-data')) {
    const form = await new Request('http://x', { method: 'POST', headers: { 'content-type': type }, body: r.body }).formData();
    const body = {};
    for (const [name, value] of form) {
      body[name] = typeof value === 'string' ? value : { filename: value.name, bytes: Buffer.from(await value.arrayBuffer()).toString('base64') };
    }
    return body;
  }
  return r.body.toString('base64');
}
