'use strict';
// Throws from a timer started at load time, outside any invocation.
setTimeout(() => {
  throw new Error('outside');
}, 50);

exports.handler = async () => 'ok';
