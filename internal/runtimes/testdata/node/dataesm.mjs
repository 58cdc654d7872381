// An ES module reaches Baton's modules through createRequire.
import { createRequire } from 'node:module';

const { data } = createRequire(import.meta.url)('baton');

export const handler = async () => {
  await data.put('esm/k', { esm: true });
  return { got: await data.get('esm/k') };
};
