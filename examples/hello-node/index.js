exports.handler = async (event, context) => {
  const name = (event && event.name) || 'world';
  console.log(`greeting ${name} from ${context.functionName}`);
  return { message: `Hello, ${name}!`, requestId: context.awsRequestId, pid: process.pid };
};
