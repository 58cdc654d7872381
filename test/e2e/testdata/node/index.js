'use strict';
// Node functions of Baton's end-to-end tests.

// pidns is the PID namespace process.pid is counted in: in a container
// sandbox that is the sandbox's, and tests map the pair to the host's pid.
const pidns = (() => {
  try {
    return require('node:fs').readlinkSync('/proc/self/ns/pid');
  } catch {
    return '';
  }
})();

exports.echo = async (event, context) => ({
  event,
  pid: process.pid,
  pidns,
  version: context.functionVersion,
  requestId: context.awsRequestId,
});

// probe reports how many events of this process overlap: each event waits
// (up to waitMs) until `target` events are in flight at once, then answers
// with the largest overlap this process has seen.
let active = 0;
let maxOverlap = 0;
const waiters = new Set();

exports.probe = async (event) => {
  const target = (event && event.target) || 1;
  const waitMs = (event && event.waitMs) || 3000;
  active++;
  maxOverlap = Math.max(maxOverlap, active);
  for (const wake of waiters) wake();
  const started = Date.now();
  while (active < target && Date.now() - started < waitMs) {
    await new Promise((resolve) => {
      const wake = () => {
        waiters.delete(wake);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(wake, 50);
      waiters.add(wake);
    });
  }
  const seen = active;
  // Stay in flight a little longer so that late arrivals see us too.
  await new Promise((resolve) => setTimeout(resolve, 100));
  active--;
  return { pid: process.pid, seen, maxOverlap };
};

class ValidationError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ValidationError';
  }
}

exports.throws = async (event) => {
  console.error('rejecting', JSON.stringify(event));
  throw new ValidationError(`bad input: ${(event && event.why) || 'no reason'}`);
};

// spawn starts a background process that sleeps 60 s, with event.marker
// as its last argument so that tests find it in any PID namespace, logs
// its pid, then waits event.sleepMs before answering. The child is this
// node binary: a base image has no `sleep`.
exports.spawn = async (event) => {
  const marker = String((event && event.marker) || '');
  const child = require('node:child_process').spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', marker], { stdio: 'ignore' });
  console.log(`spawned ${child.pid}`);
  await new Promise((resolve) => setTimeout(resolve, (event && event.sleepMs) || 0));
  return { pid: process.pid, pidns, childPid: child.pid };
};

// dieTogether waits until `target` events are in flight in this process
// (up to waitMs), then the last to arrive writes to stderr outside the
// runtime's logging (no request id) and ends the process, as a fatal
// error in an N:1 instance does.
let together = 0;
exports.dieTogether = async (event) => {
  const target = (event && event.target) || 2;
  const waitMs = (event && event.waitMs) || 5000;
  together++;
  if (together >= target) {
    process.stderr.write(`FATAL: ${event.marker}\n`);
    process.exit(7);
  }
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  together--;
  return { alone: true };
};
