'use strict';
class ValidationError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ValidationError';
  }
}

exports.handler = async (event) => {
  throw new ValidationError('bad input: ' + event.x);
};

// Throws from a timer the handler does not await; the invocation never
// settles by itself, so only the runtime's stray-error handling ends it.
exports.stray = async (event) => {
  setTimeout(() => {
    throw new TypeError('stray ' + event.x);
  }, 1);
  await new Promise(() => {});
};

// An unhandled rejection from inside the invocation's async chain.
exports.rejects = async (event) => {
  setTimeout(() => {
    Promise.reject(new Error('rejected ' + event.x));
  }, 1);
  await new Promise(() => {});
};

exports.undef = async () => undefined;
