export const handler = async (event, context) => ({
  esm: true,
  got: event,
  functionName: context.functionName,
});
