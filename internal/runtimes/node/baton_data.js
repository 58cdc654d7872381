'use strict';
// Baton's data layers, for passing values between functions by reference,
// and invoke, for calling other functions through Baton (at the end).
// Installed as the `baton` module:
//
//   const { data } = require('baton');
//   // in an ES module: import { createRequire } from 'node:module';
//   //                  const { data } = createRequire(import.meta.url)('baton');
//
//   await data.put('run/42/image', pngBuffer);               // global (the default)
//   await data.put('run/42/meta', { w: 640 }, { scope: 'local' });
//   const meta = await data.get('run/42/meta');              // { w: 640 }
//   await data.delete('run/42/image');
//
// A value is a Buffer (or Uint8Array), a string, or anything JSON.stringify
// takes; get resolves to it as it was put (a Buffer, a string, or the parsed
// JSON), or to null when the key is absent. The scope is "local" (this
// host's memory: fast, bounded, expires, gone on restart) or "global"
// (replicated, survives restarts); put writes "global" unless told
// otherwise and keeps a local copy; get and delete without a scope use both
// layers, get preferring the local copy. It may be given as the third
// argument of put (second of get and delete) or as { scope }.
//
// Keys: 1 to 512 characters of A-Z a-z 0-9 . _ / -, without empty, "." or
// ".." segments between slashes. They belong to the function's application.
//
// Standard library only: HTTP to the instance's Runtime API endpoint
// (AWS_LAMBDA_RUNTIME_API), /2018-06-01/baton/data/{key}?scope=...

const http = require('node:http');

const PREFIX = '/2018-06-01/baton/data/';
const TIMEOUT_MS = 60000; // the endpoint bounds its own waits below this

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

class DataError extends Error {
  constructor(status, type, message) {
    super(`${type}: ${message}`);
    this.name = 'DataError';
    this.status = status;
    this.type = type;
  }
}

function endpoint() {
  const address = process.env.AWS_LAMBDA_RUNTIME_API;
  if (!address) {
    throw new DataError(0, 'NoRuntimeAPI', 'AWS_LAMBDA_RUNTIME_API is not set: baton.data works inside a Baton function');
  }
  const i = address.lastIndexOf(':');
  let host = address.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number.parseInt(address.slice(i + 1), 10) };
}

function scopeOf(arg) {
  const scope = arg !== null && typeof arg === 'object' ? arg.scope : arg;
  if (scope === undefined || scope === null || scope === '') return undefined;
  if (scope !== 'local' && scope !== 'global') {
    throw new TypeError(`scope must be "local", "global" or undefined, not ${JSON.stringify(scope)}`);
  }
  return scope;
}

function send(method, key, scope, body, contentType, retried) {
  if (typeof key !== 'string') return Promise.reject(new TypeError(`key must be a string, not ${typeof key}`));
  let ep;
  try {
    ep = endpoint();
  } catch (err) {
    return Promise.reject(err);
  }
  // Escaped, so that a key the endpoint refuses reaches it and gets its
  // answer naming the problem, instead of breaking the request line.
  const path = PREFIX + key.split('/').map(encodeURIComponent).join('/') + (scope ? `?scope=${scope}` : '');
  const headers = {};
  if (body !== undefined) {
    headers['Content-Type'] = contentType;
    headers['Content-Length'] = body.length;
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: ep.host, port: ep.port, method, path, headers, agent, timeout: TIMEOUT_MS }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] || '', body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new DataError(0, 'Timeout', `${method} ${path}: no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', (err) => {
      // A kept-alive socket the endpoint closed while idle fails on
      // reuse; every data request is idempotent, so one retry is safe.
      if (!retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        send(method, key, scope, body, contentType, true).then(resolve, reject);
        return;
      }
      reject(err instanceof DataError ? err : new DataError(0, 'RuntimeAPIUnreachable', `${method} ${path}: ${err.message}`));
    });
    req.end(body);
  });
}

function fail(res) {
  let type = 'Error';
  let message = res.body.toString('utf8', 0, 500);
  try {
    const e = JSON.parse(res.body.toString('utf8'));
    if (e && typeof e === 'object') {
      type = e.errorType || type;
      message = e.errorMessage || message;
    }
  } catch {
    // not the Runtime API's error shape: keep the text
  }
  throw new DataError(res.status, type, message);
}

function encode(value) {
  if (Buffer.isBuffer(value)) return [value, 'application/octet-stream'];
  if (value instanceof Uint8Array) return [Buffer.from(value.buffer, value.byteOffset, value.byteLength), 'application/octet-stream'];
  if (typeof value === 'string') return [Buffer.from(value, 'utf8'), 'text/plain; charset=utf-8'];
  const json = JSON.stringify(value);
  if (json === undefined) throw new TypeError(`cannot store ${typeof value}: not JSON`);
  return [Buffer.from(json, 'utf8'), 'application/json'];
}

function decode(contentType, body) {
  const [mime, ...params] = contentType.split(';');
  const m = mime.trim().toLowerCase();
  if (m === 'application/json' || m.endsWith('+json')) return JSON.parse(body.toString('utf8'));
  if (m.startsWith('text/')) {
    let charset = 'utf8';
    for (const p of params) {
      const [name, val] = p.trim().split('=');
      if (name && name.toLowerCase() === 'charset' && val && Buffer.isEncoding(val.replace(/"/g, ''))) charset = val.replace(/"/g, '');
    }
    return body.toString(charset);
  }
  return body;
}

async function put(key, value, scope) {
  const [body, type] = encode(value);
  const res = await send('PUT', key, scopeOf(scope) || 'global', body, type);
  if (res.status !== 204) fail(res);
}

async function get(key, scope) {
  const res = await send('GET', key, scopeOf(scope));
  if (res.status === 404) {
    try {
      if (JSON.parse(res.body.toString('utf8')).errorType === 'KeyNotFound') return null;
    } catch {
      // fall through to the error
    }
  }
  if (res.status !== 200) fail(res);
  return decode(res.type, res.body);
}

async function del(key, scope) {
  const res = await send('DELETE', key, scopeOf(scope));
  if (res.status !== 204) fail(res);
}

const data = { put, get, delete: del, DataError };

// Invoking other functions through Baton:
//
//   const { invoke } = require('baton');
//   const result = await invoke('resize', { width: 640 });
//
// The payload is a Buffer or Uint8Array (sent as it is: the callee's
// event) or anything JSON.stringify takes (a string is sent as a JSON
// string); invoke resolves to the callee's result, parsed when it is JSON,
// else a Buffer. A payload (or result) larger than the server's
// --transfer-threshold stays on this host and the callee's host pulls it
// directly (direct transfers). It rejects with an InvokeError: type is
// the callee's error type when the callee threw (functionError true), else
// Baton's code ('function_not_found', 'payload_too_large', 'queue_full',
// ...), status the HTTP status (0 when the endpoint was not reached).
// Route: POST /2018-06-01/baton/invoke/{function}.
const INVOKE_PREFIX = '/2018-06-01/baton/invoke/';

class InvokeError extends Error {
  constructor(fn, status, type, message, functionError, stackTrace) {
    super(`invoke ${fn}: ${type}: ${message}`);
    this.name = 'InvokeError';
    this.function = fn;
    this.status = status;
    this.type = type;
    this.functionError = Boolean(functionError);
    this.stackTrace = stackTrace || [];
  }
}

function invokeBody(payload) {
  if (payload === undefined || payload === null) return Buffer.from('{}');
  if (Buffer.isBuffer(payload)) return payload;
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const json = JSON.stringify(payload);
  if (json === undefined) throw new TypeError(`cannot send ${typeof payload}: not JSON`);
  return Buffer.from(json, 'utf8');
}

function parseJSON(body) {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
}

async function invoke(fn, payload) {
  if (typeof fn !== 'string' || fn === '') throw new TypeError(`function must be a non-empty string, not ${JSON.stringify(fn)}`);
  const body = invokeBody(payload);
  let ep;
  try {
    ep = endpoint();
  } catch (err) {
    throw new InvokeError(fn, 0, 'NoRuntimeAPI', 'AWS_LAMBDA_RUNTIME_API is not set: baton.invoke works inside a Baton function');
  }
  const path = INVOKE_PREFIX + encodeURIComponent(fn);
  // No kept-alive socket and no retry: an invocation is not idempotent.
  // The callee's own timeout bounds the call.
  const res = await new Promise((resolve, reject) => {
    const req = http.request({ host: ep.host, port: ep.port, method: 'POST', path, agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': body.length } }, (r) => {
      const chunks = [];
      r.on('data', (c) => chunks.push(c));
      r.on('end', () => resolve({ status: r.statusCode, headers: r.headers, body: Buffer.concat(chunks) }));
      r.on('error', reject);
    });
    req.on('error', (err) => reject(new InvokeError(fn, 0, 'RuntimeAPIUnreachable', err.message)));
    req.end(body);
  });
  if (res.status === 200 && res.headers['baton-function-error']) {
    const e = parseJSON(res.body) || {};
    throw new InvokeError(fn, res.status, e.errorType || 'Error', e.errorMessage || '', true, e.stackTrace);
  }
  if (res.status !== 200) {
    const e = parseJSON(res.body);
    if (e && typeof e === 'object' && e.code) throw new InvokeError(fn, res.status, e.code, e.message || '');
    throw new InvokeError(fn, res.status, 'Error', res.body.toString('utf8', 0, 500));
  }
  return decode(res.headers['content-type'] || '', res.body);
}

module.exports = { data, DataError, invoke, InvokeError };
