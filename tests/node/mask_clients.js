'use strict'
// node-postgres and postgres.js reading card data through a masking custos.
// Run by tests/masking_test.go, which checks every value printed here, and
// every byte the drivers received (recorded below the TLS layer, in
// cleartext), for full card numbers. The fixture table is CUSTOS_MASK_TABLE.

const tls = require('tls')

// received holds, per driver, the cleartext bytes its sockets delivered.
const received = { pg: [], postgres: [] }
let current = 'pg'
const connect = tls.connect
tls.connect = function (...args) {
  const sock = connect.apply(this, args)
  const sink = received[current]
  sock.on('data', (chunk) => sink.push(Buffer.from(chunk)))
  return sock
}

const pg = require('pg')
const postgres = require('postgres')
const { run, errorCode, withTimeout } = require('./harness')

const table = process.env.CUSTOS_MASK_TABLE
if (!/^[a-z0-9_]+$/.test(table || '')) {
  throw new Error('CUSTOS_MASK_TABLE is not set to a table name')
}
const columns = 'id, label, pan, pan_fmt, pan_i8, pan_num, pan_num2, pan_f8, pans, pans_i8, doc, doc_json, cvv, pin_block, note, swipe'
const select = `SELECT ${columns} FROM ${table}`

function pgClient(s) {
  return new pg.Client({
    host: s.host, port: s.port, database: s.database, user: s.user, password: s.password,
    ssl: { ca: s.ca }, application_name: 'custos-e2e-mask-pg',
  })
}

async function setup(s) {
  current = 'pg'
  const c = pgClient(s)
  await c.connect()
  const other = pgClient(s)
  await other.connect()
  const notices = []
  c.on('notice', (n) => notices.push({ message: n.message, detail: n.detail, hint: n.hint }))
  current = 'postgres'
  const pgjsNotices = []
  const sql = postgres({
    host: s.host, port: s.port, database: s.database, username: s.user, password: s.password,
    ssl: { ca: s.ca }, connection: { application_name: 'custos-e2e-mask-postgresjs' },
    connect_timeout: 20, max: 1, onnotice: (n) => pgjsNotices.push({ message: n.message, detail: n.detail }),
  })
  await sql`SELECT 1`
  current = 'pg'
  return { c, other, notices, sql, pgjsNotices }
}

function errFields(e) {
  return { code: e.code, message: e.message, detail: e.detail, hint: e.hint, where: e.where }
}

const checks = [
  // node-postgres: simple Query.
  ['pg simple', async ({ c }) => (await c.query(`${select} ORDER BY id`)).rows[0]],
  ['pg simple all', async ({ c }) => (await c.query(`${select} ORDER BY id`)).rows],
  // Unnamed Parse/Bind/Describe portal/Execute/Sync.
  ['pg parameterized', async ({ c }) => (await c.query(`${select} WHERE id > $1 ORDER BY id`, [0])).rows],
  // Named statement, used twice (no Describe the second time).
  ['pg named', async ({ c }) => {
    const q = { name: 'mask_named', text: `${select} WHERE id >= $1 ORDER BY id` }
    const a = await c.query({ ...q, values: [1] })
    const b = await c.query({ ...q, values: [2] })
    return [a.rows, b.rows]
  }],
  // Execute with a row limit, PortalSuspended, Execute again.
  ['pg row limit portal', async ({ c }) => (await c.query({ text: `${select} WHERE id > $1 ORDER BY id`, values: [0], rows: 3 })).rows],
  // Binary results: node-postgres returns Buffers for types it cannot parse.
  // (No int8[]: pg-types' binary array parser takes minutes over a few rows.)
  ['pg binary', async ({ c }) => {
    const r = await c.query({ text: `SELECT pan, pan_i8, pan_num, pan_f8, pans, doc FROM ${table} WHERE id > $1 ORDER BY id`, values: [0], binary: true })
    return r.rows.map((row) => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Buffer.isBuffer(v) ? v.toString('latin1') : v])))
  }],
  ['pg sql cursor', async ({ c }) => {
    await c.query('BEGIN')
    await c.query(`DECLARE mask_cur CURSOR FOR ${select} ORDER BY id`)
    const out = []
    for (;;) {
      const r = await c.query('FETCH 4 FROM mask_cur')
      if (r.rows.length === 0) break
      out.push(...r.rows)
    }
    await c.query('COMMIT')
    return out
  }],
  ['pg errors', async ({ c }) => {
    const out = []
    for (const q of ["SELECT '4242 4242 4242 4242'::int", `INSERT INTO ${table} (id, pan) VALUES (9997, '378282246310005')`]) {
      try {
        await c.query(q)
        out.push('no error')
      } catch (e) {
        out.push(errFields(e))
      }
    }
    out.push(await errorCode(() => c.query('SELECT $1::int', ['6011111111111117'])))
    return out
  }],
  ['pg notices', async ({ c, notices }) => {
    await c.query("DO $$ BEGIN RAISE NOTICE 'card %', '5555 5555 5555 4444' USING DETAIL = '4242424242424242'; END $$")
    return notices
  }],
  ['pg notify', async ({ c, other }) => {
    await other.query('LISTEN mask_node')
    const got = new Promise((resolve) => other.on('notification', (m) => resolve(m)))
    await c.query("SELECT pg_notify('mask_node', $1)", ['card 4242-4242-4242-4242'])
    const m = await withTimeout(got, 20000, 'notification')
    return m.payload
  }],
  // postgres.js: Parse + Describe + Flush, then Bind + Execute + Sync.
  ['postgres parameterized', async ({ sql }) => {
    current = 'postgres'
    const a = await sql.unsafe(`${select} WHERE id > $1 ORDER BY id`, [0])
    const b = await sql.unsafe(`${select} WHERE id > $1 ORDER BY id`, [1])
    return [[...a], [...b]]
  }],
  ['postgres simple', async ({ sql }) => [...(await sql.unsafe(`${select} ORDER BY id`))]],
  ['postgres cursor', async ({ sql }) => {
    const out = []
    await sql.unsafe(`${select} WHERE id > $1 ORDER BY id`, [0]).cursor(3, (rows) => { out.push(...rows) })
    return out
  }],
  ['postgres copy out', async ({ sql }) => {
    const out = {}
    for (const format of ['text', 'csv', 'binary']) {
      const readable = await sql.unsafe(`COPY (${select} ORDER BY id) TO STDOUT (FORMAT ${format})`).readable()
      const chunks = []
      for await (const chunk of readable) chunks.push(chunk)
      out[format] = Buffer.concat(chunks).toString('latin1')
    }
    return out
  }],
  ['postgres errors and notices', async ({ sql, pgjsNotices }) => {
    const out = []
    try {
      await sql`SELECT ${'2223003122003222'}::int`
    } catch (e) {
      out.push(errFields(e))
    }
    await sql.unsafe("DO $$ BEGIN RAISE NOTICE 'card %', '6200000000000005'; END $$")
    return { errors: out, notices: pgjsNotices }
  }],
  ['received', async () => ({
    pg: Buffer.concat(received.pg).toString('base64'),
    postgres: Buffer.concat(received.postgres).toString('base64'),
  })],
]

run('mask', setup, checks, async ({ c, other, sql }) => {
  await c.end()
  await other.end()
  await sql.end()
})
