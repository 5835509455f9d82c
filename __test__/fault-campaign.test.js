'use strict'
// Issue 10's fault campaign at CI size (the script takes knobs for larger
// runs: node __test__/fault-campaign.js --runs 20 --steps 2000).
const test = require('node:test')
const assert = require('node:assert/strict')
const { campaign } = require('./fault-campaign.js')

for (const [seed, identity] of [[11, true], [12, false], [13, true]]) {
  test(`fault campaign seed ${seed}: ${identity ? 'rollbacks, clones' : 'partitions longer than retention'}, restarts, 20% loss, dup, reorder`, async () => {
    const r = await campaign({ seed, steps: 250, retentionMs: identity ? 600000 : 30, rollbacks: identity, clones: identity })
    assert.equal(r.same, true, `databases differ after ${r.rounds} rounds: ${JSON.stringify(r)}`)
    assert.equal(r.missing, 0, `acknowledged writes missing: ${JSON.stringify(r)}`)
    assert.ok(r.writes > 100)
    if (identity) assert.ok(r.rollbacks + r.clones > 0, 'the campaign did roll back or clone')
    else assert.ok(r.partitions > 0)
  })
}
