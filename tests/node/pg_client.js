'use strict'
// node-postgres (`pg`) through the custos Postgres proxy. Run by
// tests/node_test.go; prints the checks' results as JSON (see harness.js).
//
// What node-postgres sends: a query without parameters is a simple Query; with
// parameters, an unnamed Parse/Bind/Describe portal/Execute/Sync; with `name`,
// a named statement parsed once; with `rows`, Execute with a row limit and
// Flush, continued after each PortalSuspended.

const pg = require('pg')
const { run, errorCode, withTimeout } = require('./harness')

function client(s, extra) {
  return new pg.Client({
    host: s.host,
    port: s.port,
    database: s.database,
    user: s.user,
    password: s.password,
    ssl: { ca: s.ca },
    application_name: 'custos-e2e-node-pg',
    ...extra,
  })
}

async function setup(s) {
  const c = client(s)
  await c.connect()
  const suspended = { n: 0 }
  c.connection.on('portalSuspended', () => suspended.n++)
  return { s, c, suspended }
}

const checks = [
  ['simple', async ({ c }) => (await c.query('SELECT count(*)::int AS n FROM cards')).rows[0].n],
  ['application_name', async ({ c }) => (await c.query('SHOW application_name')).rows[0].application_name],
  ['parameterized', async ({ c }) =>
    (await c.query('SELECT holder FROM cards WHERE pan = $1', ['4242424242424242'])).rows[0].holder],
  ['types', async ({ c }) => {
    const r = await c.query(
      'SELECT $1::int8 AS big, $2::numeric AS num, $3::jsonb AS doc, $4::bytea AS raw, $5::text[] AS arr, $6::timestamptz AS at, $7::bool AS yes',
      ['9007199254740993', '-1.000000000000000000001', { a: [1, 'two'] }, Buffer.from([0, 1, 254, 255]), ['x', 'y,z', null], new Date(Date.UTC(2024, 1, 29, 12, 0, 0)), true])
    const row = r.rows[0]
    return { big: row.big, num: row.num, doc: row.doc, raw: row.raw.toString('hex'), arr: row.arr, at: row.at.toISOString(), yes: row.yes }
  }],
  ['named statement', async ({ c }) => {
    const q = { name: 'card_holder', text: 'SELECT holder FROM cards WHERE id = $1' }
    const a = await c.query({ ...q, values: [1] })
    const b = await c.query({ ...q, values: [3] })
    const n = await c.query("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = 'card_holder'")
    return [a.rows[0].holder, b.rows[0].holder, n.rows[0].n]
  }],
  ['multi-statement', async ({ c }) => {
    const rs = await c.query('SELECT 1 AS a; SELECT 2 AS b')
    return rs.map((r) => r.rows)
  }],
  ['error then recovery', async ({ c }) => {
    const code = await errorCode(() => c.query('SELECT 1/0'))
    const code2 = await errorCode(() => c.query('SELECT $1::int', ['nope']))
    return [code, code2, (await c.query("SELECT 'alive' AS s")).rows[0].s]
  }],
  ['row limit portal', async ({ c, suspended }) => {
    // Execute with a row limit + Flush, PortalSuspended, Execute again...
    suspended.n = 0
    const a = await c.query({ text: 'SELECT g FROM generate_series(1, 95) g', rows: 10 })
    const aSuspended = suspended.n
    suspended.n = 0
    const b = await c.query({ text: 'SELECT g FROM generate_series(1, $1::int) g', values: [25], rows: 7 })
    return {
      rows: a.rows.length, sum: a.rows.reduce((x, r) => x + r.g, 0), suspended: aSuspended,
      paramRows: b.rows.length, paramSuspended: suspended.n,
    }
  }],
  ['sql cursor', async ({ c }) => {
    await c.query('BEGIN')
    await c.query('DECLARE node_cur CURSOR FOR SELECT g FROM generate_series(1, 100) g')
    const sizes = []
    for (;;) {
      const r = await c.query('FETCH 30 FROM node_cur')
      if (r.rows.length === 0) break
      sizes.push(r.rows.length)
    }
    await c.query('CLOSE node_cur')
    await c.query('COMMIT')
    return sizes
  }],
  ['transaction', async ({ c }) => {
    await c.query('DROP TABLE IF EXISTS node_pg_tx')
    await c.query('CREATE TABLE node_pg_tx (v int)')
    await c.query('BEGIN')
    await c.query('INSERT INTO node_pg_tx VALUES ($1), ($2)', [1, 2])
    await c.query('ROLLBACK')
    await c.query('BEGIN')
    await c.query('INSERT INTO node_pg_tx VALUES ($1)', [40])
    const failed = await errorCode(() => c.query('INSERT INTO node_pg_tx VALUES ($1)', ['x']))
    const aborted = await errorCode(() => c.query('SELECT 1'))
    await c.query('ROLLBACK')
    await c.query('INSERT INTO node_pg_tx VALUES ($1)', [42])
    const sum = (await c.query('SELECT sum(v)::int AS s FROM node_pg_tx')).rows[0].s
    await c.query('DROP TABLE node_pg_tx')
    return [failed, aborted, sum]
  }],
  ['binary results', async ({ c }) => {
    const r = await c.query({ text: 'SELECT $1::int4 AS v, $2::text AS t', values: [7, 'seven'], binary: true })
    return [r.rows[0].v, r.rows[0].t]
  }],
  ['listen notify', async ({ s, c }) => {
    const other = client(s)
    await other.connect()
    try {
      await other.query('LISTEN node_pg_chan')
      const got = new Promise((resolve) => other.on('notification', (m) => resolve(m)))
      await c.query("SELECT pg_notify('node_pg_chan', $1)", ['hello from pg'])
      const m = await withTimeout(got, 20000, 'notification')
      const pid = (await c.query('SELECT pg_backend_pid() AS p')).rows[0].p
      return [m.channel, m.payload, m.processId === pid]
    } finally {
      await other.end()
    }
  }],
  ['large value', async ({ c }) => {
    const big = 'x'.repeat(3 << 20)
    const r = await c.query('SELECT length($1::text) AS n, md5($1::text) = md5(repeat(\'x\', $2)) AS same', [big, 3 << 20])
    return [r.rows[0].n, r.rows[0].same]
  }],
]

run('pg', setup, checks, ({ c }) => c.end())
