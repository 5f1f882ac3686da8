// Builds the proxy binary from this checkout (once) and runs it as a child process.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
let binary;

export function proxyBinary() {
  if (!binary) {
    binary = join(mkdtempSync(join(tmpdir(), 'aop-')), 'azure-openai-proxy');
    execFileSync('go', ['build', '-o', binary, '.'], { cwd: repo, stdio: 'inherit' });
  }
  return binary;
}

// startProxy runs the proxy against endpoint and resolves once it listens.
// Suites that compare with AzureOpenAI run the dated API, as that client
// speaks it; the v1 suite sets AZURE_OPENAI_API_VER to '' (the v1 default).
export function startProxy(endpoint, env = {}) {
  const child = spawn(proxyBinary(), ['-listen', '127.0.0.1:0'], {
    env: { PATH: process.env.PATH, AZURE_OPENAI_ENDPOINT: endpoint, AZURE_OPENAI_API_VER: '2024-10-21', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`proxy did not start:\n${logs}`)), 15000);
    child.stderr.on('data', (d) => {
      logs += d;
      const m = logs.match(/listen=(127\.0\.0\.1:\d+)/);
      if (m && !child.url) {
        clearTimeout(timer);
        child.url = `http://${m[1]}`;
        resolve({
          url: child.url,
          logs: () => logs,
          stop: () => new Promise((done) => { child.once('exit', done); child.kill('SIGTERM'); }),
        });
      }
    });
    child.once('exit', (code) => reject(new Error(`proxy exited with ${code}:\n${logs}`)));
  });
}
