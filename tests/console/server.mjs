// Starts a real Odometer for the browser tests: a fresh data directory, `odometer init` (the
// first organization and its key), `odometer organizations create` (a second one, whose key
// must see nothing of the first), then `odometer serve` on a free port of 127.0.0.1.
// `ODO_BIN` names the binary (tests/console/run builds it).

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function created(output) {
  const org = /\b(org_[0-9A-Za-z]+)/.exec(output);
  const key = /\b(odo_[0-9A-Za-z_]+)/.exec(output);
  if (!org || !key) throw new Error(`unexpected output of odometer: ${output}`);
  return { organization: org[1], key: key[1] };
}

export async function startServer() {
  const binary = process.env.ODO_BIN;
  if (!binary) throw new Error('ODO_BIN must name the odometer binary (tests/console/run sets it)');
  if (!fs.existsSync(binary)) throw new Error(`ODO_BIN=${binary} does not exist: build it first`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'odometer-console-'));
  const run = (...args) => execFileSync(binary, [...args, '--data-dir', dataDir], { encoding: 'utf8' });
  const first = created(run('init', '--name', 'Console suite'));
  const other = created(run('organizations', 'create', '--name', 'Other org'));
  const log = fs.openSync(path.join(dataDir, 'server.log'), 'a');
  const child = spawn(binary, ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', log, 'pipe'],
  });
  const baseUrl = await new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`odometer serve did not report its address within 60 s: ${seen}`)), 60000);
    child.stderr.on('data', (chunk) => {
      fs.appendFileSync(path.join(dataDir, 'server.log'), chunk);
      seen += chunk.toString();
      const found = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(seen);
      if (found) {
        clearTimeout(timer);
        resolve(found[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`odometer serve exited with ${code}: ${seen}`));
    });
  });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${baseUrl}/healthz`)).ok) break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    baseUrl,
    dataDir,
    first,
    other,
    stop() {
      child.kill('SIGTERM');
    },
  };
}

// The native API, called directly (what the console must agree with).
export function client(baseUrl, key) {
  return async function call(method, url, body) {
    const response = await fetch(baseUrl + url, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  };
}
