'use strict'
// Quick protocol chaos runs (see chaos.js): 5 peers, ~1500 ops, 20% loss,
// duplicates, reordering, a partition and a close/reopen, per topology, with
// fixed seeds; then one harsher run. A failure prints the command line that replays it.
const test = require('node:test')
const assert = require('node:assert/strict')
const { runChaos, summary, reproduce } = require('./chaos.js')

const RUNS = [
  { topology: 'mesh', seed: 1 },
  { topology: 'hub', seed: 2 },
  { topology: 'chain', seed: 3 },
  // Harsher knobs: more loss, split frames, truncated and corrupted frames
  // (clusterKey set), several partitions and restarts.
  { topology: 'chain', seed: 7, peers: 6, drop: 0.4, dup: 0.15, reorder: 0.5, delay: 15, partition: 3, restart: 2, keys: 4, maxFrameBytes: 400, truncate: 0.03, corrupt: 0.03 }
]

for (const run of RUNS) {
  const name = run.peers ? `${run.topology} seed ${run.seed} (harsh)` : `${run.topology} seed ${run.seed}`
  test(`chaos: ${name} converges to the LWW result and loses no returned write`, { timeout: 60000 }, async (t) => {
    const r = await runChaos({ peers: 5, ops: 1500, ...run })
    t.diagnostic(summary(r))
    const detail = r.failures.slice(0, 15).map((f) => '  - ' + f.slice(0, 2000)).join('\n')
    assert.ok(r.ok, `chaos failed with seed ${r.seed} (${r.failures.length} failures):\n${detail}\nreproduce: ${reproduce(r)}`)
    assert.ok(r.converged && r.rounds > 0, 'converged')
    assert.equal(r.counts.applyThrows, 0)
    assert.ok(r.counts.partitions >= 1 && r.counts.restarts >= 1, 'the run had a partition and a restart')
    assert.ok(r.net.dropped > 0 && r.net.duplicated > 0 && r.net.delayed > 0, 'the network misbehaved')
  })
}

// Regression: gap requests (and pings, and gone answers) must fit
// maxFrameBytes even with many holes, or the serving peer rejects them and
// the holes are never repaired.
test('chaos: mesh with maxFrameBytes 256 and many holes converges', { timeout: 60000 }, async (t) => {
  const r = await runChaos({ topology: 'mesh', seed: 1, peers: 5, ops: 3000, drop: 0.5, tickEvery: 400, maxFrameBytes: 256, maxRounds: 60 })
  t.diagnostic(summary(r))
  assert.ok(r.ok, `chaos failed with seed ${r.seed}:\n${r.failures.slice(0, 5).map((f) => '  - ' + f.slice(0, 300)).join('\n')}\nreproduce: ${reproduce(r)}`)
})
