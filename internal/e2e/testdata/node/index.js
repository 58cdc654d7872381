'use strict';
// Node functions of Baton's end-to-end tests.

exports.echo = async (event, context) => ({
  event,
  pid: process.pid,
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

// spawn starts a background `sleep 60`, logs its pid, then waits
// event.sleepMs before answering.
exports.spawn = async (event) => {
  const child = require('node:child_process').spawn('sleep', ['60'], { stdio: 'ignore' });
  console.log(`spawned ${child.pid}`);
  await new Promise((resolve) => setTimeout(resolve, (event && event.sleepMs) || 0));
  return { pid: process.pid, childPid: child.pid };
};
