'use strict';
// Baton synthetic function (Node.js): each event chooses what it does.
//
// The Go package internal/bench/synthetic documents the event (Behavior) and the
// reply (Reply); this file and the Python and Go implementations run the
// same steps in the same order. Standard library only.

const http = require('node:http');
const https = require('node:https');
const { performance } = require('node:perf_hooks');

const RUNTIME = 'nodejs';
const PAGE_SIZE = 4096;

// Kept-alive connections to the Baton API, so chain calls do not pay for a
// new connection each time.
const agents = {
  'http:': new http.Agent({ keepAlive: true }),
  'https:': new https.Agent({ keepAlive: true }),
};

class ChainError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ChainError';
  }
}

exports.handler = async (event, context) => {
  const start = performance.now();
  const cpu0 = process.cpuUsage();
  const ev = event !== null && typeof event === 'object' ? event : {};

  const touchMB = Math.trunc(num(ev.touchMB));
  if (touchMB > 0) touch(touchMB);
  const busyMs = num(ev.busyMs);
  if (busyMs > 0) busy(busyMs);
  const sleepMs = num(ev.sleepMs);
  if (sleepMs > 0) await sleep(sleepMs);

  let hops = null;
  let callMs = 0;
  const chain = Array.isArray(ev.chain) ? ev.chain : [];
  if (chain.length > 0) ({ hops, callMs } = await callNext(ev, chain, context));

  const reply = { runtime: RUNTIME };
  const size = Math.trunc(num(ev.responseBytes));
  if (size > 0) reply.body = 'x'.repeat(size);
  const rss = maxRssMB();
  if (rss > 0) reply.maxRssMB = rss;
  const cpu = process.cpuUsage(cpu0);
  reply.cpuMs = (cpu.user + cpu.system) / 1000;
  const execMs = performance.now() - start;
  reply.execMs = execMs;
  if (hops !== null) {
    hops[0] = { function: context.functionName, execMs, callMs, cold: false };
    reply.hops = hops;
  }
  return reply;
};

function num(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

// touch writes one byte per page of a fresh buffer so the kernel has to
// back every page. Nothing keeps the buffer after return: V8 frees it at
// its next collection, which large external allocations bring forward.
function touch(mb) {
  const buf = Buffer.alloc(mb * 1024 * 1024);
  for (let i = 0; i < buf.length; i += PAGE_SIZE) buf[i] = 1;
}

function busy(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // spin
  }
}

// Timers run on the event loop's cached millisecond clock and may fire a
// little early by the monotonic clock, so wait again until really due.
async function sleep(ms) {
  const end = performance.now() + ms;
  for (let left = ms; left > 0; left = end - performance.now()) {
    await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.ceil(left))));
  }
}

function maxRssMB() {
  // resourceUsage reports KiB on every platform (libuv normalises macOS).
  return typeof process.resourceUsage === 'function' ? process.resourceUsage().maxRSS / 1024 : 0;
}

// callNext invokes chain[0] with the rest of the chain; it returns the hops
// (the first left for the caller to fill in) and the time spent waiting.
async function callNext(ev, chain, context) {
  const target = String(chain[0]);
  if (!ev.server) throw new ChainError(`chain call to ${target}: the event has no server URL`);
  const next = { ...ev };
  if (chain.length > 1) next.chain = chain.slice(1);
  else delete next.chain;
  const payload = Buffer.from(JSON.stringify(next), 'utf8');
  // Never outlive this invocation's own deadline.
  const timeoutMs = Math.max(1, context.getRemainingTimeInMillis());

  const start = performance.now();
  const res = await post(ev.server, target, payload, timeoutMs);
  const callMs = performance.now() - start;

  if (res.status >= 300) throw new ChainError(`chain call to ${target} failed: ${errorText(res.status, res.body)}`);
  let downHops;
  try {
    const down = JSON.parse(res.body.toString('utf8'));
    if (Array.isArray(down.hops) && down.hops.length > 0) downHops = down.hops;
    else if (typeof down.execMs === 'number') downHops = [{ execMs: down.execMs, callMs: 0 }];
    else throw new Error('no execMs');
  } catch (err) {
    throw new ChainError(`chain call to ${target}: the reply is not a synthetic function's: ${err.message}`);
  }
  const first = { ...downHops[0], function: target, cold: res.cold };
  return { hops: [null, first, ...downHops.slice(1)], callMs };
}

// errorText has the shape of the Go client's errors: message (HTTP status code).
function errorText(status, body) {
  let message = '';
  let code = '';
  try {
    const doc = JSON.parse(body.toString('utf8'));
    message = typeof doc.message === 'string' ? doc.message : '';
    code = typeof doc.code === 'string' ? doc.code : '';
  } catch {
    message = body.toString('utf8', 0, 500).trim();
  }
  if (!message) return `HTTP ${status}`;
  return code ? `${message} (HTTP ${status} ${code})` : `${message} (HTTP ${status})`;
}

function post(server, target, payload, timeoutMs, retried) {
  return new Promise((resolve, reject) => {
    let base;
    try {
      base = new URL(server);
    } catch {
      base = null;
    }
    if (!base || !agents[base.protocol]) {
      reject(new ChainError(`chain call to ${target}: server URL ${JSON.stringify(server)} must look like http://host:port`));
      return;
    }
    const mod = base.protocol === 'https:' ? https : http;
    const url = new URL(`${base.pathname.replace(/\/+$/, '')}/v1/functions/${encodeURIComponent(target)}/invoke`, base);
    const req = mod.request(
      url,
      {
        method: 'POST',
        agent: agents[base.protocol],
        headers: { 'Content-Type': 'application/json', 'Content-Length': payload.length },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({
          status: res.statusCode, cold: res.headers['baton-cold-start'] === 'true', body: Buffer.concat(chunks),
        }));
        res.on('error', (err) => reject(new ChainError(`chain call to ${target}: ${err.message}`)));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => {
      // The server closes idle kept-alive connections; such a socket fails
      // before the request is read, so one retry cannot invoke twice.
      if (!retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        post(server, target, payload, timeoutMs, true).then(resolve, reject);
        return;
      }
      reject(new ChainError(`chain call to ${target}: ${err.message}`));
    });
    req.end(payload);
  });
}
