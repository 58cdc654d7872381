'use strict';
// One handler for a run of invocations: echoes what it got, fails when
// asked, or answers with a string of the size asked for.

exports.handler = async (event, context) => {
  if ('fail' in event) throw new Error(event.fail);
  if ('size' in event) return 'x'.repeat(event.size);
  return {
    event,
    requestId: context.awsRequestId,
    arn: context.invokedFunctionArn,
    custom: context.clientContext ? context.clientContext.custom : null,
    remaining: context.getRemainingTimeInMillis(),
  };
};
