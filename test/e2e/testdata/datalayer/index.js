// Runs a list of data layer operations through require('baton').data and
// describes their results, like app.py.
const crypto = require('node:crypto');
const { data } = require('baton');

function pattern(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

function valueOf(op) {
  const kind = op.kind || 'json';
  if (kind === 'bytes') return op.size !== undefined ? pattern(op.size) : Buffer.from(op.b64, 'base64');
  if (kind === 'str') return op.size !== undefined ? 's'.repeat(op.size) : op.value;
  return op.value;
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

function describe(v) {
  if (v === null) return { kind: 'none' };
  if (Buffer.isBuffer(v)) {
    const d = { kind: 'bytes', len: v.length, sha256: sha256(v) };
    if (v.length <= 64) d.b64 = v.toString('base64');
    return d;
  }
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    const d = { kind: 'str', len: b.length, sha256: sha256(b) };
    if (b.length <= 200) d.value = v;
    return d;
  }
  return { kind: 'json', value: v };
}

async function run(op) {
  try {
    switch (op.op) {
      case 'put':
        await data.put(op.key, valueOf(op), op.scope);
        return { ok: true };
      case 'get':
        return describe(await data.get(op.key, op.scope));
      case 'delete':
        await data.delete(op.key, op.scope);
        return { ok: true };
      default:
        throw new Error(`unknown op ${op.op}`);
    }
  } catch (e) {
    if (e instanceof data.DataError) return { error: e.type, status: e.status, message: e.message };
    throw e;
  }
}

exports.handler = async (event) => {
  const results = [];
  for (const op of event.ops) results.push(await run(op));
  return { results };
};
