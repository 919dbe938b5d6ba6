'use strict'
// Shared by the client scripts: reads the connection settings from the
// environment (the names `custos dev` writes to dev.env, plus CUSTOS_USER and
// CUSTOS_TOKEN), runs named checks and prints one JSON object on stdout:
//   {"client": "...", "ok": true, "checks": {"name": value, ...}}
// or, when a check throws, "ok": false with the check's name and error.

const fs = require('fs')

function settings() {
  const need = ['CUSTOS_PG_HOST', 'CUSTOS_PG_PORT', 'CUSTOS_DATABASE', 'CUSTOS_USER', 'CUSTOS_TOKEN', 'CUSTOS_CA_FILE']
  const missing = need.filter((k) => !process.env[k])
  if (missing.length) {
    throw new Error('missing environment: ' + missing.join(', '))
  }
  return {
    host: process.env.CUSTOS_PG_HOST,
    port: Number(process.env.CUSTOS_PG_PORT),
    database: process.env.CUSTOS_DATABASE,
    user: process.env.CUSTOS_USER,
    password: process.env.CUSTOS_TOKEN,
    ca: fs.readFileSync(process.env.CUSTOS_CA_FILE),
  }
}

// withTimeout rejects when p does not settle within ms.
function withTimeout(p, ms, what) {
  let timer
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)
  })
  return Promise.race([p, t]).finally(() => clearTimeout(timer))
}

// run executes checks in order: an array of [name, async () => value].
async function run(client, setup, checks, teardown) {
  const out = { client, ok: true, checks: {} }
  let current = 'setup'
  let ctx
  try {
    ctx = await withTimeout(setup(settings()), 30000, 'setup')
    for (const [name, fn] of checks) {
      current = name
      out.checks[name] = await withTimeout(fn(ctx), 30000, name)
    }
  } catch (err) {
    out.ok = false
    out.failed = current
    out.error = String((err && err.stack) || err)
    if (err && err.code) out.code = err.code
  }
  if (ctx && teardown) {
    try {
      await withTimeout(teardown(ctx), 10000, 'teardown')
    } catch (err) {
      if (out.ok) {
        out.ok = false
        out.failed = 'teardown'
        out.error = String(err)
      }
    }
  }
  process.stdout.write(JSON.stringify(out, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n')
  process.exitCode = out.ok ? 0 : 1
}

// errorCode runs fn, which must fail, and returns the SQLSTATE it failed with.
async function errorCode(fn) {
  try {
    await fn()
  } catch (err) {
    return err.code || String(err)
  }
  throw new Error('expected an error, got none')
}

module.exports = { run, errorCode, withTimeout }
