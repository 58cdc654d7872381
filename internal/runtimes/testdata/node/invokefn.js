'use strict';
const { invoke, InvokeError } = require('baton');

async function err(name, payload) {
  try {
    await invoke(name, payload);
  } catch (e) {
    if (e instanceof InvokeError) return [e.status, e.type, e.functionError];
    throw e;
  }
  return null;
}

exports.handler = async () => {
  const big = 'x'.repeat(100000);
  return {
    echo: await invoke('echo', { a: [1, null, true] }),
    str: await invoke('echo', 'h\u00e9llo'),
    bytes: await invoke('echo', Buffer.from('{"raw":1}')),
    raw: Array.from(await invoke('raw', {})),
    big: (await invoke('echo', big)) === big,
    fails: await err('fails', {}),
    missing: await err('missing', {}),
    badName: await err('Bad_Name', {}),
  };
};
