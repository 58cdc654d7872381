'use strict';
// Baton runtime client for Node.js (AWS Lambda Runtime API 2018-06-01).
//
//   node baton_runtime.js
//
// Loads the _HANDLER export and serves BATON_CONCURRENCY (default 1)
// invocations at once, each in its own /next long-poll loop. Standard
// library only. When Baton gives it a unix socket (BATON_RUNTIME_SOCKET),
// each loop runs over a connection of its own to it instead, in Baton's
// framed protocol (internal/node/runtimeapi/frame), which saves HTTP's
// cost on every invocation; init errors still go over HTTP.

const http = require('node:http');
const net = require('node:net');
const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const { AsyncLocalStorage } = require('node:async_hooks');
const { pathToFileURL } = require('node:url');

const API_PREFIX = '/2018-06-01/runtime';

// Where Baton's modules for functions (`require('baton')`) are installed,
// beside this file.
const LIBRARY_DIR = 'node_modules';

const env = process.env;
const concurrency = parseConcurrency(env.BATON_CONCURRENCY);
const apiAddress = env.AWS_LAMBDA_RUNTIME_API;
const [apiHost, apiPort] = splitHostPort(apiAddress || '');
const socketPath = env.BATON_RUNTIME_SOCKET;

// Each loop holds one request at a time (its long poll or its post), so N
// sockets suffice; a little headroom avoids queueing behind a slow close.
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency + 2, maxFreeSockets: concurrency + 2 });

// The invocation an async chain belongs to; read by console and by the
// process-level error handlers.
const invocationStore = new AsyncLocalStorage();

function parseConcurrency(raw) {
  const n = Number.parseInt(raw || '1', 10);
  return Number.isFinite(n) && n > 0 ? n : 1;
}

function splitHostPort(address) {
  const i = address.lastIndexOf(':');
  if (i < 0) return [address, 80];
  let host = address.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return [host, Number.parseInt(address.slice(i + 1), 10)];
}

// ---------------------------------------------------------------------------
// Logging: one line per console call, tagged with the request id, so the
// platform can attribute output when several invocations share a process.

const rawStdoutWrite = process.stdout.write.bind(process.stdout);
const rawStderrWrite = process.stderr.write.bind(process.stderr);

function currentRequestId() {
  const store = invocationStore.getStore();
  return store ? store.requestId : undefined;
}

function logLine(write, level, message) {
  const line = `${new Date().toISOString()}\t${currentRequestId()}\t${level}\t${message.replace(/\n/g, '\r')}\n`;
  write(line);
}

function patchConsole() {
  const make = (write, level) => (...args) => logLine(write, level, util.format(...args));
  console.log = make(rawStdoutWrite, 'INFO');
  console.info = make(rawStdoutWrite, 'INFO');
  console.debug = make(rawStdoutWrite, 'DEBUG');
  console.warn = make(rawStderrWrite, 'WARN');
  console.error = make(rawStderrWrite, 'ERROR');
  console.trace = (...args) => {
    const err = { name: 'Trace', message: util.format(...args) };
    Error.captureStackTrace(err, console.trace);
    logLine(rawStderrWrite, 'TRACE', err.stack);
  };
}

function runtimeLog(message) {
  rawStderrWrite(`baton runtime: ${message}\n`);
}

// ---------------------------------------------------------------------------
// Runtime API client.

function request(method, urlPath, body, headers, retried) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: apiHost, port: apiPort, method, path: urlPath, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', (err) => {
      // A kept-alive socket the server closed while idle fails on reuse;
      // one retry on a fresh socket is safe.
      if (!retried && req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
        request(method, urlPath, body, headers, true).then(resolve, reject);
        return;
      }
      reject(err);
    });
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

async function post(urlPath, body, extraHeaders) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8');
  const res = await request('POST', urlPath, buf, {
    'Content-Type': 'application/json',
    'Content-Length': buf.length,
    ...extraHeaders,
  });
  if (res.status >= 300) {
    // The API refused this post (e.g. payload too large); the runtime is
    // still fine, so report and keep serving.
    runtimeLog(`POST ${urlPath}: status ${res.status}: ${res.body.toString('utf8', 0, 500)}`);
  }
}

function headerSafe(value) {
  return String(value).replace(/[^\x20-\x7e]/g, '?');
}

function postResponse(requestId, payload) {
  return post(`${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/response`, payload);
}

function postError(requestId, errBody) {
  return post(`${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/error`, JSON.stringify(errBody), {
    'Lambda-Runtime-Function-Error-Type': headerSafe(errBody.errorType),
  });
}

// One invocation loop over HTTP: the /next long poll and result posts.
const httpTransport = {
  async next() {
    const res = await request('GET', `${API_PREFIX}/invocation/next`);
    if (res.status !== 200) {
      throw new Error(`GET /invocation/next: status ${res.status}: ${res.body.toString('utf8', 0, 200)}`);
    }
    const h = res.headers;
    return {
      requestId: h['lambda-runtime-aws-request-id'],
      deadlineMs: Number.parseInt(h['lambda-runtime-deadline-ms'] || '0', 10),
      functionArn: h['lambda-runtime-invoked-function-arn'],
      traceId: h['lambda-runtime-trace-id'],
      clientContext: h['lambda-runtime-client-context'],
      cognitoIdentity: h['lambda-runtime-cognito-identity'],
      body: res.body,
    };
  },
  respond: postResponse,
  reportError: postError,
};

// ---------------------------------------------------------------------------
// The runtime socket: frames of uint32 length (of kind and body), kind,
// body; strings in bodies are a uint32 byte count and the bytes.

const FRAME_NEXT = 0x01;
const FRAME_RESPONSE = 0x02;
const FRAME_ERROR = 0x03;
const FRAME_EVENT = 0x81;
const FRAME_REJECTED = 0x82;
const NEXT_FRAME = Buffer.from([0, 0, 0, 1, FRAME_NEXT]);
// Results up to this size are joined with the following Next into one
// write.
const JOIN_LIMIT = 64 << 10;

function frameHead(kind, bodyLength, strs) {
  let size = 5;
  for (const s of strs) size += 4 + s.length;
  const head = Buffer.allocUnsafe(size);
  head.writeUInt32BE(bodyLength + 1, 0);
  head[4] = kind;
  let off = 5;
  for (const s of strs) {
    head.writeUInt32BE(s.length, off);
    s.copy(head, off + 4);
    off += 4 + s.length;
  }
  return head;
}

function parseEvent(body) {
  const deadlineMs = Number(body.readBigInt64BE(0));
  let off = 8;
  const fields = [];
  for (let i = 0; i < 5; i++) {
    const n = body.readUInt32BE(off);
    off += 4;
    if (off + n > body.length) throw new Error('malformed event frame: field beyond the frame');
    fields.push(body.toString('utf8', off, off + n));
    off += n;
  }
  return {
    requestId: fields[0],
    deadlineMs,
    functionArn: fields[1],
    traceId: fields[2],
    clientContext: fields[3] || undefined,
    cognitoIdentity: fields[4] || undefined,
    body: body.subarray(off),
  };
}

// One invocation loop over a connection of its own to the runtime socket.
// A result goes out with the Next that follows it, in one write: one
// round trip per invocation.
class SocketTransport {
  constructor(path) {
    this.path = path;
    this.sock = null;
    this.chunks = [];
    this.size = 0;
    this.frames = [];
    this.waiter = null;
    this.error = null;
    this.pending = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection({ path: this.path });
      this.sock = sock;
      this.chunks = [];
      this.size = 0;
      this.frames = [];
      this.error = null;
      sock.once('connect', () => {
        sock.off('error', reject);
        sock.on('error', (err) => this.broken(sock, err));
        resolve();
      });
      sock.once('error', reject);
      sock.on('data', (chunk) => this.onData(sock, chunk));
      sock.on('close', () => this.broken(sock, new Error('runtime socket closed')));
    });
  }

  broken(sock, err) {
    if (sock !== this.sock || this.error) return;
    this.error = err;
    sock.destroy();
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    }
  }

  onData(sock, chunk) {
    if (sock !== this.sock) return;
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size >= 5) {
      const len = this.peekLength();
      if (len === 0) {
        this.broken(sock, new Error('malformed frame: length 0'));
        return;
      }
      if (this.size < 4 + len) return;
      const frame = this.take(4 + len);
      const f = { kind: frame[4], body: frame.subarray(5) };
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w.resolve(f);
      } else {
        this.frames.push(f);
      }
    }
  }

  peekLength() {
    const first = this.chunks[0];
    if (first.length >= 4) return first.readUInt32BE(0);
    return Buffer.concat(this.chunks, 4).readUInt32BE(0);
  }

  // take consumes the first n buffered bytes, copying only when they span
  // chunks.
  take(n) {
    const first = this.chunks[0];
    let out;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let off = 0;
      while (off < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - off);
        c.copy(out, off, 0, k);
        off += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.size -= n;
    return out;
  }

  readFrame() {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  async next() {
    // One reconnect covers a connection the node dropped after a refused
    // result (too large); the result is not sent again: the node has
    // failed that invocation.
    for (let attempt = 0; ; attempt++) {
      try {
        if (this.error || !this.sock) await this.connect();
        const pending = this.pending;
        this.pending = null;
        if (!pending) {
          this.sock.write(NEXT_FRAME);
        } else if (pending[1].length <= JOIN_LIMIT) {
          this.sock.write(Buffer.concat([pending[0], pending[1], NEXT_FRAME]));
        } else {
          this.sock.write(pending[0]);
          this.sock.write(pending[1]);
          this.sock.write(NEXT_FRAME);
        }
        for (;;) {
          const f = await this.readFrame();
          if (f.kind === FRAME_EVENT) return parseEvent(f.body);
          if (f.kind === FRAME_REJECTED) {
            // The node refused a result (e.g. too large); the runtime is
            // still fine, so report and keep serving.
            const status = f.body.length >= 2 ? f.body.readUInt16BE(0) : 0;
            runtimeLog(`result refused: status ${status}: ${f.body.toString('utf8', 2, 502)}`);
            continue;
          }
          throw new Error(`unexpected frame kind 0x${f.kind.toString(16)}`);
        }
      } catch (err) {
        if (this.sock) this.broken(this.sock, err);
        this.sock = null;
        if (attempt > 0) throw new Error(`runtime socket ${this.path}: ${err.message}`);
      }
    }
  }

  respond(requestId, payload) {
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
    const id = Buffer.from(String(requestId), 'utf8');
    this.pending = [frameHead(FRAME_RESPONSE, 4 + id.length + body.length, [id]), body];
  }

  reportError(requestId, errBody) {
    const doc = Buffer.from(JSON.stringify(errBody), 'utf8');
    const id = Buffer.from(String(requestId), 'utf8');
    const typ = Buffer.from(String(errBody.errorType), 'utf8');
    this.pending = [frameHead(FRAME_ERROR, 8 + id.length + typ.length + doc.length, [id, typ]), doc];
  }
}

function postInitError(errBody) {
  return post(`${API_PREFIX}/init/error`, JSON.stringify(errBody), {
    'Lambda-Runtime-Function-Error-Type': headerSafe(errBody.errorType),
  });
}

// ---------------------------------------------------------------------------
// Errors.

function errorBody(err, typeOverride) {
  if (err instanceof Error || (err !== null && typeof err === 'object' && 'message' in err)) {
    let stack = [];
    if (typeof err.stack === 'string') stack = err.stack.split('\n');
    return {
      errorType: typeOverride || err.name || (err.constructor && err.constructor.name) || 'Error',
      errorMessage: String(err.message),
      stackTrace: stack,
    };
  }
  let message;
  try {
    message = typeof err === 'string' ? err : JSON.stringify(err) ?? String(err);
  } catch {
    message = String(err);
  }
  return { errorType: typeOverride || typeof err, errorMessage: message, stackTrace: [] };
}

class InitError extends Error {
  constructor(type, message, cause) {
    super(message);
    this.name = type;
    if (cause && cause.stack) this.stack = `${type}: ${message}\n${cause.stack}`;
  }
}

// ---------------------------------------------------------------------------
// Handler loading.

function splitHandler(spec) {
  // "dir/file.export.nested": the module is up to the first dot after the
  // last slash, the rest is the export path.
  const slash = spec.lastIndexOf('/');
  const dir = spec.slice(0, slash + 1);
  const rest = spec.slice(slash + 1);
  const dot = rest.indexOf('.');
  if (dot <= 0 || dot === rest.length - 1) {
    throw new InitError('Runtime.MalformedHandlerName', `Bad handler '${spec}': expected file.export`);
  }
  return { modulePath: dir + rest.slice(0, dot), exportPath: rest.slice(dot + 1) };
}

function isESMRequireError(err) {
  return err && (err.code === 'ERR_REQUIRE_ESM' || (err instanceof SyntaxError && /\b(import|export)\b/.test(err.message)));
}

async function loadModule(taskRoot, modulePath) {
  const base = path.resolve(taskRoot, modulePath);
  for (const ext of ['.js', '.mjs', '.cjs']) {
    const file = base + ext;
    if (!fs.existsSync(file)) continue;
    if (ext === '.mjs') return import(pathToFileURL(file).href);
    try {
      return require(file);
    } catch (err) {
      // A .js file in a "type": "module" package, or ESM syntax without
      // that marker, only loads through import().
      if (ext === '.js' && isESMRequireError(err)) return import(pathToFileURL(file).href);
      throw err;
    }
  }
  // Not a file of the task: maybe a package installed in its node_modules.
  let resolved;
  try {
    resolved = require.resolve(modulePath, { paths: [taskRoot] });
  } catch (err) {
    throw new InitError('Runtime.ImportModuleError', `Error: Cannot find module '${modulePath}'`, err);
  }
  try {
    return require(resolved);
  } catch (err) {
    if (isESMRequireError(err)) return import(pathToFileURL(resolved).href);
    throw err;
  }
}

async function loadHandler() {
  const spec = env._HANDLER || '';
  const taskRoot = env.LAMBDA_TASK_ROOT || process.cwd();
  const { modulePath, exportPath } = splitHandler(spec);
  let mod;
  try {
    mod = await loadModule(taskRoot, modulePath);
  } catch (err) {
    if (err instanceof InitError) throw err;
    if (err instanceof SyntaxError) throw new InitError('Runtime.UserCodeSyntaxError', String(err), err);
    if (err && err.code === 'MODULE_NOT_FOUND') {
      throw new InitError('Runtime.ImportModuleError', String(err), err);
    }
    throw err;
  }
  let fn = mod;
  for (const part of exportPath.split('.')) {
    fn = fn == null ? undefined : fn[part];
  }
  // An ES module importing a CommonJS file exposes it as "default".
  if (fn === undefined && mod && mod.default && typeof mod.default === 'object') {
    fn = mod.default;
    for (const part of exportPath.split('.')) fn = fn == null ? undefined : fn[part];
  }
  if (fn === undefined) {
    throw new InitError('Runtime.HandlerNotFound', `${modulePath}.${exportPath} is undefined or not exported`);
  }
  if (typeof fn !== 'function') {
    throw new InitError('Runtime.HandlerNotFound', `${modulePath}.${exportPath} is not a function`);
  }
  return fn;
}

// ---------------------------------------------------------------------------
// Invocations.

function parseJSONHeader(value) {
  if (!value) return undefined;
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

function makeContext(inv, settle) {
  const deadline = inv.deadlineMs || 0;
  const context = {
    callbackWaitsForEmptyEventLoop: true,
    awsRequestId: inv.requestId,
    invokedFunctionArn: inv.functionArn,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJSONHeader(inv.clientContext),
    identity: parseJSONHeader(inv.cognitoIdentity),
    getRemainingTimeInMillis() {
      return Math.max(0, deadline - Date.now());
    },
    // Legacy completion methods some handlers still use.
    done(err, result) {
      settle(err, result);
    },
    succeed(result) {
      settle(null, result);
    },
    fail(err) {
      settle(err == null ? new Error('handled') : err);
    },
  };
  return context;
}

// Runs the handler and resolves with { ok, value } once it is done,
// whichever style it uses. The same settle function is what uncaught
// errors of this invocation go through.
function runHandler(handler, event, store) {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== null && err !== undefined) resolve({ ok: false, value: err });
      else resolve({ ok: true, value: result });
    };
    store.fail = (err) => settle(err == null ? new Error('unknown error') : err);
    const context = makeContext(store.inv, settle);
    let ret;
    try {
      ret = handler(event, context, settle);
    } catch (err) {
      settle(err == null ? new Error('handler threw ' + String(err)) : err);
      return;
    }
    if (ret && typeof ret.then === 'function') {
      ret.then(
        (v) => settle(null, v),
        (err) => settle(err == null ? new Error('handler rejected with ' + String(err)) : err),
      );
    } else if (handler.length < 3) {
      // A synchronous handler without a callback: its return value is the
      // result (Lambda would wait for an empty event loop, which cannot be
      // observed per invocation when several share the process).
      settle(null, ret);
    }
  });
}

async function handleInvocation(handler, transport, inv) {
  const requestId = inv.requestId;
  if (concurrency === 1) {
    // Lambda's per-invocation trace variable; meaningless when several
    // invocations run at once, so only set for N=1.
    if (inv.traceId) env._X_AMZN_TRACE_ID = inv.traceId;
    else delete env._X_AMZN_TRACE_ID;
  }
  const store = { requestId, inv, fail: null };
  inFlight.set(requestId, store);
  try {
    let event;
    try {
      event = inv.body.length ? JSON.parse(inv.body.toString('utf8')) : null;
    } catch (err) {
      await transport.reportError(requestId, {
        errorType: 'Runtime.UnmarshalError',
        errorMessage: `Unable to unmarshal input: ${err.message}`,
        stackTrace: [],
      });
      return;
    }
    const outcome = await invocationStore.run(store, () => runHandler(handler, event, store));
    if (!outcome.ok) {
      await transport.reportError(requestId, errorBody(outcome.value));
      return;
    }
    let payload;
    try {
      payload = JSON.stringify(outcome.value === undefined ? null : outcome.value);
      if (payload === undefined) payload = 'null';
    } catch (err) {
      await transport.reportError(requestId, {
        errorType: 'Runtime.MarshalError',
        errorMessage: `Unable to stringify response body: ${err.message}`,
        stackTrace: [],
      });
      return;
    }
    await transport.respond(requestId, payload);
  } finally {
    inFlight.delete(requestId);
  }
}

const inFlight = new Map();

async function loop(handler, transport) {
  for (;;) {
    await handleInvocation(handler, transport, await transport.next());
  }
}

// loopTransports returns one transport per invocation loop: connections to
// the runtime socket when Baton offers one that answers, HTTP otherwise.
async function loopTransports() {
  if (socketPath) {
    const transports = [];
    try {
      for (let i = 0; i < concurrency; i++) {
        const t = new SocketTransport(socketPath);
        await t.connect();
        transports.push(t);
      }
      return transports;
    } catch (err) {
      for (const t of transports) t.sock.destroy();
      runtimeLog(`runtime socket ${socketPath}: ${err.message}; using HTTP`);
    }
  }
  return Array(concurrency).fill(httpTransport);
}

// Errors that escape a handler's promise chain. When the async context
// tells which invocation they belong to, only that invocation fails;
// otherwise the process is in an unknown state and exits.
function onStrayError(err, kind) {
  const store = invocationStore.getStore();
  if (store && store.fail && inFlight.get(store.requestId) === store) {
    logLine(rawStderrWrite, 'ERROR', `${kind}: ${util.inspect(err)}`);
    store.fail(err);
    return;
  }
  logLine(rawStderrWrite, 'ERROR', `${kind} outside any invocation: ${util.inspect(err)}`);
  process.exit(1);
}

// exposeLibrary lets functions require Baton's modules by name: their
// directory joins NODE_PATH, which CommonJS resolution (require, and
// createRequire in ES modules) searches after the function's own
// node_modules, so a package of the function's named baton still wins.
// ES modules' bare imports ignore NODE_PATH; a loader hook that would
// serve them costs tens of milliseconds per start.
function exposeLibrary() {
  const dir = path.join(__dirname, LIBRARY_DIR);
  env.NODE_PATH = env.NODE_PATH ? `${env.NODE_PATH}${path.delimiter}${dir}` : dir;
  const Module = require('node:module');
  if (typeof Module._initPaths === 'function') Module._initPaths();
}

async function main() {
  patchConsole();
  exposeLibrary();
  if (!apiAddress) {
    runtimeLog('AWS_LAMBDA_RUNTIME_API is not set');
    process.exit(1);
  }
  process.on('uncaughtException', (err) => onStrayError(err, 'Uncaught Exception'));
  process.on('unhandledRejection', (err) => onStrayError(err, 'Unhandled Promise Rejection'));

  const taskRoot = env.LAMBDA_TASK_ROOT;
  if (taskRoot) {
    try {
      process.chdir(taskRoot);
    } catch (err) {
      runtimeLog(`chdir ${taskRoot}: ${err.message}`);
    }
  }

  let handler;
  try {
    handler = await loadHandler();
  } catch (err) {
    const body = errorBody(err);
    logLine(rawStderrWrite, 'ERROR', `Init error: ${body.errorType}: ${body.errorMessage}`);
    try {
      await postInitError(body);
    } catch (postErr) {
      runtimeLog(`posting init error: ${postErr.message}`);
    }
    process.exit(1);
  }

  const loops = (await loopTransports()).map((t) => loop(handler, t));
  try {
    await Promise.race(loops);
  } catch (err) {
    // Losing the Runtime API means this instance is done.
    runtimeLog(`runtime API: ${err.message}`);
    process.exit(1);
  }
}

main().catch((err) => {
  runtimeLog(`fatal: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
