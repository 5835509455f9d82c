'use strict'
// The live page of examples/express-ws (issue 12): two peers as child
// processes on 127.0.0.1, the page of peer 1 open in headless Chromium
// (Debian's chromium, driven by puppeteer-core), writes on peer 2 over HTTP
// appear on the page without a reload, fed by Server-Sent Events from the
// replicator's 'change' event. Writes examples/express-ws/live-page.png.
const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { freePort, spawnPeer, stop } = require('../examples/shared/launch.js')

const EXAMPLE = path.join(__dirname, '..', 'examples', 'express-ws')
const SCREENSHOT = path.join(EXAMPLE, 'live-page.png')
const WAIT_MS = 15000

/** Debian's chromium: CHROMIUM_PATH, else the usual places on PATH. */
function findChromium () {
  const candidates = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser']
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    candidates.push(path.join(dir, 'chromium'), path.join(dir, 'chromium-browser'))
  }
  return candidates.find((p) => p && fs.existsSync(p)) || null
}

const chromium = findChromium()
// CI installs Chromium (.ci/run) and must run this test; elsewhere it is
// skipped when there is no browser. Under Bun, puppeteer's pipe transport
// is not supported: the Node run covers it.
const skip = process.versions.bun
  ? 'puppeteer-core drives Chromium from Node; the Node run covers this test'
  : chromium || process.env.CI ? false : 'no chromium binary (set CHROMIUM_PATH or apt-get install chromium)'

describe('examples/express-ws live page in headless Chromium', { timeout: 60000, skip }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-live-'))
  let peers = []
  let browser
  let page
  let a, b

  before(async () => {
    assert.ok(chromium, 'CI must have chromium installed (.ci/run installs it)')
    const ws = [await freePort(), await freePort()]
    peers = await Promise.all([1, 2].map((id, i) => spawnPeer(process.execPath, [path.join(EXAMPLE, 'server.js')], {
      PEER_ID: String(id),
      PORT: '0',
      WS_PORT: String(ws[i]),
      PEERS: `${3 - id}@127.0.0.1:${ws[1 - i]}`,
      DB: path.join(dir, `peer-${id}.db`),
      HEARTBEAT_MS: '100'
    }, { prefix: `[live ${id}] `, echo: !!process.env.QUILT_EXAMPLES_VERBOSE })))
    ;[a, b] = peers.map((p) => p.info.url)
    const puppeteer = require('puppeteer-core')
    browser = await puppeteer.launch({
      executablePath: chromium,
      headless: true,
      pipe: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--user-data-dir=' + path.join(dir, 'chromium')]
    })
    page = await browser.newPage()
    await page.setViewport({ width: 900, height: 520 })
  })

  after(async () => {
    if (browser) await browser.close().catch(() => {})
    await Promise.all(peers.map((p) => stop(p.child)))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  /** The rows the page shows now: [[id, title, deleted], ...]. */
  const shown = () => page.$$eval('#todos tr', (trs) => trs.map((tr) => [
    Number(tr.children[0].textContent), tr.children[2].textContent, tr.classList.contains('deleted'), tr.children[4].textContent
  ]))

  async function waitShown (pred, what) {
    const deadline = Date.now() + WAIT_MS
    let last
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      last = await shown()
      if (pred(last)) return last
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.fail(`${what}: not on the page within ${WAIT_MS} ms; it shows ${JSON.stringify(last)}`)
  }

  async function post (url, body) {
    const r = await fetch(`${url}/todos`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    assert.equal(r.status, 201)
    return r.json()
  }

  it('shows rows written on the other peer as they arrive, without a reload', async () => {
    await post(a, { id: 1, title: 'written on peer 1 before the page opened' })
    await page.goto(`${a}/`, { waitUntil: 'domcontentloaded' })
    await page.waitForFunction(() => document.getElementById('state').textContent === 'live', { timeout: WAIT_MS })
    await waitShown((rows) => rows.some((r) => r[0] === 1), 'the row written before the page opened')
    // Mark the document: a reload would lose this.
    await page.evaluate(() => { window.__sameDocument = true })

    await post(b, { id: 2, title: 'written on peer 2' })
    let rows = await waitShown((r) => r.some((x) => x[0] === 2 && x[1] === 'written on peer 2'), 'the row written on peer 2')
    assert.deepEqual(rows.find((r) => r[0] === 2).slice(1), ['written on peer 2', false, 'peer 2'])

    // An update and a tombstone from peer 2 show too.
    await post(b, { id: 1, title: 'renamed on peer 2' })
    await fetch(`${b}/todos/2`, { method: 'DELETE' })
    rows = await waitShown((r) => r.some((x) => x[0] === 1 && x[1] === 'renamed on peer 2') && r.some((x) => x[0] === 2 && x[2]), 'the update and the delete from peer 2')
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page was not reloaded')

    // A write through the page's own form lands on peer 1 and reaches peer 2.
    await page.type('input[name=title]', 'typed into the page')
    await page.click('form button')
    await waitShown((r) => r.some((x) => x[1] === 'typed into the page' && x[3] === 'peer 1'), 'the row typed into the page')
    const deadline = Date.now() + WAIT_MS
    let onB = []
    for (let i = 0; i < 300 && Date.now() < deadline; i++) {
      onB = await (await fetch(`${b}/todos`)).json()
      if (onB.some((t) => t.title === 'typed into the page')) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.ok(onB.some((t) => t.title === 'typed into the page'), 'the page write reached peer 2')

    await post(b, { id: 3, title: 'one more from peer 2', done: true })
    await waitShown((r) => r.some((x) => x[0] === 3), 'the last row')
    await page.screenshot({ path: SCREENSHOT })
    assert.ok(fs.statSync(SCREENSHOT).size > 1000, 'a screenshot was written')
  })
})
