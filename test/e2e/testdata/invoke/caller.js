'use strict';
// The Node caller of test/e2e/transfer_invoke_test.go: as app.py's
// caller, through require('baton').invoke.
const { invoke, InvokeError } = require('baton');

function make(seed, n) {
  const unit = (seed + '0123456789abcdef').repeat(4);
  return unit.repeat(Math.floor(n / unit.length) + 1).slice(0, n);
}

exports.handler = async (event) => {
  try {
    return await invoke(event.target, { data: make(event.seed, Number(event.n)) });
  } catch (e) {
    if (!(e instanceof InvokeError)) throw e;
    return { error: { status: e.status, type: e.type, message: e.message, functionError: e.functionError } };
  }
};
