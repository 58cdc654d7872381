'use strict';
// Callback-style handlers that complete from a timer, after returning.
exports.handler = (event, context, callback) => {
  setTimeout(() => callback(null, { viaCallback: event.x, requestId: context.awsRequestId }), 5);
};

exports.fails = (event, context, callback) => {
  setTimeout(() => callback(new RangeError('callback failed: ' + event.x)), 5);
};
