'use strict';
// Holds every invocation until the test releases them all, so the test can
// see that BATON_CONCURRENCY events are in flight at once.
const http = require('node:http');

function waitForRelease(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        res.resume();
        res.on('end', resolve);
      })
      .on('error', reject);
  });
}

exports.handler = async (event, context) => {
  console.log('start', event.n);
  await waitForRelease(event.releaseURL);
  console.info('end', event.n, 'multi\nline');
  console.error('err', event.n);
  return { n: event.n, requestId: context.awsRequestId };
};
