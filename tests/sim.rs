//! Deterministic simulation of several engines over a lossy, duplicating,
//! reordering network (seeded), in mesh, hub-and-spoke and chain topologies.
//! After the network heals, every database must be identical.

use quilt::core::engine::{Config, Engine, Migration, Outgoing};
use quilt::core::value::Value;
use std::collections::VecDeque;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, v TEXT, n INTEGER, deletedAt INTEGER, PRIMARY KEY (id));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT, n INTEGER, deletedAt INTEGER);";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
}

struct Net {
    queue: VecDeque<(u32, Vec<u8>)>,
    rng: Rng,
    drop: f64,
}

impl Net {
    fn push(&mut self, out: Vec<Outgoing>) {
        for o in out {
            if self.rng.chance(self.drop) {
                continue;
            }
            if self.rng.chance(0.05) {
                self.queue.push_back((o.peer, o.frame.clone()));
            }
            // reorder: sometimes jump the queue
            if self.rng.chance(0.2) {
                self.queue.push_front((o.peer, o.frame));
            } else {
                self.queue.push_back((o.peer, o.frame));
            }
        }
    }
}

fn links(topology: &str, n: u32) -> Vec<(u32, u32)> {
    let mut l = Vec::new();
    for a in 1..=n {
        for b in 1..=n {
            let ok = match topology {
                "mesh" => a != b,
                "hub" => a != b && (a == 1 || b == 1),
                _ => a.abs_diff(b) == 1,
            };
            if ok {
                l.push((a, b));
            }
        }
    }
    l
}

fn dump(e: &Engine) -> Vec<Vec<Value>> {
    e.query("SELECT * FROM t ORDER BY id", &[], false)
        .unwrap()
        .1
}

fn run(topology: &str, seed: u64) {
    let n = 4u32;
    let mut engines: Vec<Engine> = (1..=n)
        .map(|id| {
            let mut e = Engine::open(Config {
                peer_id: Some(id),
                heartbeat_ms: 0,
                ..Config::default()
            })
            .unwrap();
            e.migrate(&[Migration {
                up: SCHEMA.into(),
                ..Default::default()
            }])
            .unwrap();
            e
        })
        .collect();
    let mut net = Net {
        queue: VecDeque::new(),
        rng: Rng(seed | 1),
        drop: 0.2,
    };
    for (a, b) in links(topology, n) {
        let out = engines[a as usize - 1].add_peer(b).unwrap();
        net.push(out);
    }
    let deliver = |engines: &mut Vec<Engine>, net: &mut Net, budget: usize| {
        for _ in 0..budget {
            let Some((to, f)) = net.queue.pop_front() else {
                break;
            };
            let (_, out) = engines[to as usize - 1].apply_frame(&f).unwrap();
            net.push(out);
        }
    };
    for step in 0..600 {
        let who = net.rng.below(n as u64) as usize;
        let id = net.rng.below(20) as i64;
        let row = match net.rng.below(4) {
            0 => vec![
                ("id".to_string(), Value::Int(id)),
                ("v".to_string(), Value::Null),
            ],
            1 => vec![
                ("id".to_string(), Value::Int(id)),
                ("n".to_string(), Value::Int(step)),
            ],
            _ => vec![
                ("id".to_string(), Value::Int(id)),
                ("v".to_string(), Value::Text(format!("s{step}"))),
            ],
        };
        if net.rng.chance(0.05) {
            engines[who]
                .delete("t", vec![("id".to_string(), Value::Int(id))])
                .unwrap();
        } else {
            engines[who].upsert("t", vec![row]).unwrap();
        }
        if step % 7 == 0 {
            for e in engines.iter_mut() {
                let out = e.drain_outbox();
                net.push(out);
            }
            deliver(&mut engines, &mut net, 30);
        }
        if step % 25 == 0 {
            for e in engines.iter_mut() {
                let out = e.tick().unwrap();
                net.push(out);
            }
        }
    }
    // Heal: no more loss, tick until identical.
    net.drop = 0.0;
    let mut rounds = 0;
    loop {
        for e in engines.iter_mut() {
            let out = e.drain_outbox();
            net.push(out);
            let out = e.tick().unwrap();
            net.push(out);
        }
        deliver(&mut engines, &mut net, 100_000);
        rounds += 1;
        let first = dump(&engines[0]);
        if engines.iter().all(|e| dump(e) == first)
            && engines
                .iter()
                .all(|e| e.status().peers.iter().all(|p| p.missing == 0))
        {
            break;
        }
        assert!(
            rounds < 200,
            "{topology} seed {seed}: no convergence after {rounds} rounds"
        );
    }
}

#[test]
fn converges_in_mesh() {
    for seed in [1, 2, 3] {
        run("mesh", seed);
    }
}

#[test]
fn converges_hub_and_spoke() {
    for seed in [4, 5, 6] {
        run("hub", seed);
    }
}

#[test]
fn converges_in_a_chain() {
    for seed in [7, 8, 9] {
        run("chain", seed);
    }
}
