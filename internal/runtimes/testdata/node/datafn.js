// Uses Baton's data layers through require('baton').
const { data } = require('baton');

exports.handler = async () => {
  await data.put('k/bytes', Buffer.from([0, 255, 114, 97, 119]));
  await data.put('k/str', 'h\u00e9llo');
  await data.put('k/json', { a: [1, null, true] });
  await data.put('k/local', 'here', { scope: 'local' });
  const out = {
    bytes: [...(await data.get('k/bytes'))],
    isBuffer: Buffer.isBuffer(await data.get('k/bytes')),
    str: await data.get('k/str'),
    json: await data.get('k/json'),
    local: await data.get('k/local', 'local'),
    localFromGlobal: await data.get('k/local', { scope: 'global' }),
    missing: await data.get('k/missing'),
  };
  await data.delete('k/str');
  out.deleted = await data.get('k/str');
  try {
    await data.put('bad/../key', 'x');
  } catch (e) {
    out.badKey = [e.status, e.type];
  }
  return out;
};
