'use strict';
// Baton runtime client for Node.js (AWS Lambda Runtime API 2018-06-01).
//
//   node baton_runtime.js
//
// Loads the _HANDLER export and serves BATON_CONCURRENCY (default 1)
// invocations at once, each in its own /next long-poll loop. Standard
// library only.

const http = require('node:http');
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

function makeContext(headers, settle) {
  const deadline = Number.parseInt(headers['lambda-runtime-deadline-ms'] || '0', 10);
  const context = {
    callbackWaitsForEmptyEventLoop: true,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parseJSONHeader(headers['lambda-runtime-client-context']),
    identity: parseJSONHeader(headers['lambda-runtime-cognito-identity']),
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
    const context = makeContext(store.headers, settle);
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

async function handleInvocation(handler, res) {
  const requestId = res.headers['lambda-runtime-aws-request-id'];
  if (concurrency === 1) {
    // Lambda's per-invocation trace variable; meaningless when several
    // invocations run at once, so only set for N=1.
    const trace = res.headers['lambda-runtime-trace-id'];
    if (trace) env._X_AMZN_TRACE_ID = trace;
    else delete env._X_AMZN_TRACE_ID;
  }
  const store = { requestId, headers: res.headers, fail: null };
  inFlight.set(requestId, store);
  try {
    let event;
    try {
      event = res.body.length ? JSON.parse(res.body.toString('utf8')) : null;
    } catch (err) {
      await postError(requestId, {
        errorType: 'Runtime.UnmarshalError',
        errorMessage: `Unable to unmarshal input: ${err.message}`,
        stackTrace: [],
      });
      return;
    }
    const outcome = await invocationStore.run(store, () => runHandler(handler, event, store));
    if (!outcome.ok) {
      await postError(requestId, errorBody(outcome.value));
      return;
    }
    let payload;
    try {
      payload = JSON.stringify(outcome.value === undefined ? null : outcome.value);
      if (payload === undefined) payload = 'null';
    } catch (err) {
      await postError(requestId, {
        errorType: 'Runtime.MarshalError',
        errorMessage: `Unable to stringify response body: ${err.message}`,
        stackTrace: [],
      });
      return;
    }
    await postResponse(requestId, payload);
  } finally {
    inFlight.delete(requestId);
  }
}

const inFlight = new Map();

async function loop(handler) {
  for (;;) {
    const res = await request('GET', `${API_PREFIX}/invocation/next`);
    if (res.status !== 200) {
      throw new Error(`GET /invocation/next: status ${res.status}: ${res.body.toString('utf8', 0, 200)}`);
    }
    await handleInvocation(handler, res);
  }
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

  const loops = [];
  for (let i = 0; i < concurrency; i++) loops.push(loop(handler));
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
