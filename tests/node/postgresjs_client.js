'use strict'
// postgres.js (`postgres`) through the custos Postgres proxy. Run by
// tests/node_test.go; prints the checks' results as JSON (see harness.js).
//
// What postgres.js sends: the first use of a parameterized statement is
// Parse + Describe + Flush with no Sync (it waits for the ParameterDescription
// and RowDescription before it binds), then Bind + Execute + Sync; later uses
// of the same statement are Bind + Execute + Sync only. sql.unsafe without
// parameters is a simple Query; cursors are Execute with a row limit + Flush.
//
// To check that the no-Sync path really happens, the cleartext protocol
// stream is recorded by wrapping the TLS sockets postgres.js opens.

const tls = require('tls')
const postgres = require('postgres')
const { run, errorCode, withTimeout } = require('./harness')

// writes holds, per socket write, the frontend message types it carried.
const writes = []
const connect = tls.connect
tls.connect = function (...args) {
  const sock = connect.apply(this, args)
  let pending = Buffer.alloc(0)
  let startup = true
  const write = sock.write
  sock.write = function (chunk, ...rest) {
    const types = []
    pending = Buffer.concat([pending, Buffer.from(chunk)])
    for (;;) {
      const off = startup ? 0 : 1
      if (pending.length < off + 4) break
      const len = pending.readInt32BE(off)
      if (pending.length < off + len) break
      types.push(startup ? 'startup' : String.fromCharCode(pending[0]))
      pending = pending.subarray(off + len)
      startup = false
    }
    writes.push(types)
    return write.call(this, chunk, ...rest)
  }
  return sock
}

function connectOptions(s, extra) {
  return {
    host: s.host,
    port: s.port,
    database: s.database,
    username: s.user,
    password: s.password,
    ssl: { ca: s.ca },
    connection: { application_name: 'custos-e2e-postgresjs' },
    connect_timeout: 20,
    onnotice: () => {},
    ...extra,
  }
}

async function setup(s) {
  const sql = postgres(connectOptions(s, { max: 2 }))
  await sql`SELECT 1`
  return { s, sql }
}

// recorded runs fn and returns its value and the writes it made.
async function recorded(fn) {
  writes.length = 0
  const value = await fn()
  return { value, writes: writes.filter((w) => w.length > 0).map((w) => w.join('')) }
}

const checks = [
  ['application_name', async ({ sql }) => (await sql`SHOW application_name`)[0].application_name],
  ['parameterized first use', async ({ sql }) => {
    const r = await recorded(() => sql`SELECT holder FROM cards WHERE pan = ${'4242424242424242'}`)
    return { holder: r.value[0].holder, writes: r.writes }
  }],
  ['parameterized reuse', async ({ sql }) => {
    const r = await recorded(() => sql`SELECT holder FROM cards WHERE pan = ${'5555555555554444'}`)
    return { holder: r.value[0].holder, writes: r.writes }
  }],
  ['types', async ({ sql }) => {
    const [row] = await sql`SELECT ${'9007199254740993'}::int8 AS big, ${'-1.000000000000000000001'}::numeric AS num,
      ${sql.json({ a: [1, 'two'] })}::jsonb AS doc, ${Buffer.from([0, 1, 254, 255])}::bytea AS raw,
      ${['x', 'y,z']}::text[] AS arr, ${new Date(Date.UTC(2024, 1, 29, 12, 0, 0))}::timestamptz AS at`
    return { big: row.big, num: row.num, doc: row.doc, raw: row.raw.toString('hex'), arr: row.arr, at: row.at.toISOString() }
  }],
  ['unsafe multi-statement', async ({ sql }) => {
    const r = await sql.unsafe('SELECT 1 AS a; SELECT 2 AS b')
    return r.map((res) => [...res])
  }],
  ['unsafe with parameters', async ({ sql }) => (await sql.unsafe('SELECT $1::int + 1 AS n', [41]))[0].n],
  ['error then recovery', async ({ sql }) => {
    const code = await errorCode(() => sql`SELECT 1 / ${0}::int`)
    const code2 = await errorCode(() => sql`SELECT * FROM no_such_table WHERE id = ${1}`)
    return [code, code2, (await sql`SELECT ${'alive'}::text AS s`)[0].s]
  }],
  ['transaction', async ({ sql }) => {
    await sql`DROP TABLE IF EXISTS node_pgjs_tx`
    await sql`CREATE TABLE node_pgjs_tx (v int)`
    const inside = await sql.begin(async (tx) => {
      await tx`INSERT INTO node_pgjs_tx VALUES (${1}), (${2})`
      return (await tx`SELECT count(*)::int AS n FROM node_pgjs_tx`)[0].n
    })
    const thrown = await sql
      .begin(async (tx) => {
        await tx`INSERT INTO node_pgjs_tx VALUES (${100})`
        throw new Error('abort this one')
      })
      .catch((e) => e.message)
    const partial = await sql.begin(async (tx) => {
      await tx`INSERT INTO node_pgjs_tx VALUES (${10})`
      const code = await errorCode(() =>
        tx.savepoint(async (sp) => {
          await sp`INSERT INTO node_pgjs_tx VALUES (${1000})`
          await sp`SELECT 1 / ${0}::int`
        }))
      return code
    })
    const [{ s }] = await sql`SELECT sum(v)::int AS s FROM node_pgjs_tx`
    await sql`DROP TABLE node_pgjs_tx`
    return { inside, thrown, savepointError: partial, sum: s }
  }],
  ['cursor', async ({ sql }) => {
    const sizes = []
    let sum = 0
    const r = await recorded(() =>
      sql`SELECT g FROM generate_series(1, ${95}::int) g`.cursor(10, (rows) => {
        sizes.push(rows.length)
        for (const row of rows) sum += row.g
      }))
    return { sizes, sum, writes: r.writes }
  }],
  ['copy out', async ({ sql }) => {
    const readable = await sql`COPY (SELECT g, 'v' || g FROM generate_series(1, 5000) g) TO STDOUT`.readable()
    const chunks = []
    for await (const chunk of readable) chunks.push(chunk)
    const lines = Buffer.concat(chunks).toString().split('\n').filter(Boolean)
    return [lines.length, lines[0], lines[4999]]
  }],
  ['copy in', async ({ sql }) => {
    await sql`DROP TABLE IF EXISTS node_pgjs_copy`
    await sql`CREATE TABLE node_pgjs_copy (id int, v text)`
    const writable = await sql`COPY node_pgjs_copy (id, v) FROM STDIN`.writable()
    await new Promise((resolve, reject) => {
      writable.on('error', reject)
      writable.on('finish', resolve)
      for (let i = 1; i <= 5000; i++) writable.write(`${i}\tline ${i}\n`)
      writable.end()
    })
    const [row] = await sql`SELECT count(*)::int AS n, sum(id)::int AS s FROM node_pgjs_copy`
    await sql`DROP TABLE node_pgjs_copy`
    return [row.n, row.s]
  }],
  ['listen notify', async ({ sql }) => {
    let resolve
    const got = new Promise((r) => (resolve = r))
    const { unlisten } = await sql.listen('node_pgjs_chan', (payload) => resolve(payload))
    await sql.notify('node_pgjs_chan', 'hello from postgres.js')
    const payload = await withTimeout(got, 20000, 'notification')
    await unlisten()
    return payload
  }],
  ['pool concurrency', async ({ sql }) => {
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => sql`SELECT ${i}::int AS i, pg_backend_pid() AS pid`))
    const backends = new Set(rs.map((r) => r[0].pid)).size
    return { ok: rs.every((r, i) => r[0].i === i), withinPool: backends >= 1 && backends <= 2 }
  }],
  ['direct tls', async ({ s }) => {
    // TLS from the first byte (ALPN "postgresql"), no SSLRequest.
    const direct = postgres(connectOptions(s, { max: 1, sslnegotiation: 'direct' }))
    try {
      return (await direct`SELECT ${'direct'}::text || ' ok' AS s`)[0].s
    } finally {
      await direct.end({ timeout: 5 })
    }
  }],
]

run('postgres', setup, checks, ({ sql }) => sql.end({ timeout: 5 }))
