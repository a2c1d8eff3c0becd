//! The oracle on random DAGs: every replica, at every Seq, equals a from-scratch
//! recomputation, with 1 and 2 workers.

use std::collections::BTreeMap;

use prr_engine::oracle::DeltaLog;
use prr_engine::{
    Coll, CountSubscription, Dag, DeltaCount, Input, JoinView, ReplicaDescription, ReplicaId,
    Runtime, RuntimeConfig, SourceDelta,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Multiset = BTreeMap<u64, isize>;

#[derive(Clone, Copy, Debug)]
enum Op {
    Map(u64, u64),
    Filter(u64, u64),
    Concat,
    Join(u64),
    Distinct,
    Count(u64),
}

impl Op {
    fn arity(self) -> usize {
        match self {
            Op::Concat | Op::Join(_) => 2,
            _ => 1,
        }
    }

    fn build<'s>(self, ins: &[Coll<'s, u64>]) -> Coll<'s, u64> {
        match self {
            Op::Map(mul, add) => ins[0].clone().map(move |x| (x * mul + add) % 50),
            Op::Filter(m, r) => ins[0].clone().filter(move |x| x % m == r),
            Op::Concat => ins[0].clone().concat(ins[1].clone()),
            Op::Join(m) => {
                let a = ins[0].clone().map(move |x| (x % m, x));
                let b = ins[1].clone().map(move |y| (y % m, y));
                a.join(b).map(|(_, (x, y))| (x + 3 * y) % 50)
            }
            Op::Distinct => ins[0].clone().distinct(),
            Op::Count(m) => ins[0]
                .clone()
                .map(move |x| x % m)
                .count()
                .map(|(k, c)| k * 1000 + c as u64),
        }
    }

    fn oracle(self, ins: &[&Multiset]) -> Multiset {
        let mut out = Multiset::new();
        let mut add = |x: u64, d: isize| {
            *out.entry(x).or_insert(0) += d;
        };
        match self {
            Op::Map(mul, a) => ins[0].iter().for_each(|(x, d)| add((x * mul + a) % 50, *d)),
            Op::Filter(m, r) => ins[0]
                .iter()
                .filter(|(x, _)| *x % m == r)
                .for_each(|(x, d)| add(*x, *d)),
            Op::Concat => ins
                .iter()
                .for_each(|i| i.iter().for_each(|(x, d)| add(*x, *d))),
            Op::Join(m) => {
                for (x, dx) in ins[0] {
                    for (y, dy) in ins[1] {
                        if x % m == y % m {
                            add((x + 3 * y) % 50, dx * dy);
                        }
                    }
                }
            }
            Op::Distinct => ins[0]
                .iter()
                .filter(|(_, d)| **d > 0)
                .for_each(|(x, _)| add(*x, 1)),
            Op::Count(m) => {
                let mut counts: BTreeMap<u64, isize> = BTreeMap::new();
                for (x, d) in ins[0] {
                    *counts.entry(x % m).or_insert(0) += d;
                }
                counts
                    .into_iter()
                    .filter(|(_, c)| *c != 0)
                    .for_each(|(k, c)| add(k * 1000 + c as u64, 1));
            }
        }
        out.retain(|_, d| *d != 0);
        out
    }
}

struct RandomDag {
    sources: usize,
    derived: Vec<(Op, Vec<usize>)>,
    /// Views, after every other replica: `(left, right)` inputs.
    views: Vec<(usize, usize)>,
}

/// The views' join: keys `x % 5`, records `(x + 3y) % 50`, none when `x + y` is a multiple of
/// 4 (so `combine` filters too).
fn test_view() -> JoinView<u64> {
    JoinView {
        left_key: |x| Some(x % 5),
        right_key: |y| Some(y % 5),
        combine: |x, y| ((x + y) % 4 != 0).then_some((x + 3 * y) % 50),
        partition_follows_right: false,
    }
}

fn view_oracle(left: &Multiset, right: &Multiset) -> Multiset {
    let mut out = Multiset::new();
    for (x, dx) in left {
        for (y, dy) in right {
            if x % 5 == y % 5 && (x + y) % 4 != 0 {
                *out.entry((x + 3 * y) % 50).or_insert(0) += dx * dy;
            }
        }
    }
    out.retain(|_, d| *d != 0);
    out
}

impl RandomDag {
    fn generate(rng: &mut StdRng) -> Self {
        let sources = rng.random_range(1..=2);
        let n = rng.random_range(3..=7);
        let mut derived = Vec::new();
        for i in 0..n {
            let available = sources + i;
            let op = match rng.random_range(0..6) {
                0 => Op::Map(rng.random_range(1..5), rng.random_range(0..7)),
                1 => Op::Filter(rng.random_range(2..4), rng.random_range(0..2)),
                2 => Op::Concat,
                3 => Op::Join(rng.random_range(3..8)),
                4 => Op::Distinct,
                _ => Op::Count(rng.random_range(2..6)),
            };
            let inputs = (0..op.arity())
                .map(|_| rng.random_range(0..available))
                .collect();
            derived.push((op, inputs));
        }
        let replicas = sources + n;
        let views = (0..rng.random_range(1..=2))
            .map(|_| (rng.random_range(0..replicas), rng.random_range(0..replicas)))
            .collect();
        RandomDag {
            sources,
            derived,
            views,
        }
    }

    fn name(i: usize) -> String {
        format!("r{i}")
    }

    fn dag(&self) -> Dag<u64> {
        let mut descs = Vec::new();
        for i in 0..self.sources {
            descs.push(ReplicaDescription::source(&Self::name(i), "x % 7", |x| {
                x % 7
            }));
        }
        for (j, (op, inputs)) in self.derived.iter().enumerate() {
            let op = *op;
            let ins = inputs
                .iter()
                .map(|i| Input::full(&Self::name(*i)))
                .collect();
            descs.push(ReplicaDescription::derived(
                &Self::name(self.sources + j),
                "x % 7",
                |x| x % 7,
                ins,
                move |c| op.build(c),
            ));
        }
        let first_view = self.sources + self.derived.len();
        for (k, (l, r)) in self.views.iter().enumerate() {
            descs.push(ReplicaDescription::join_view(
                &Self::name(first_view + k),
                "x % 7",
                |x| x % 7,
                &Self::name(*l),
                &Self::name(*r),
                test_view(),
            ));
        }
        Dag::new(descs).expect("valid random DAG")
    }

    fn oracle(&self, sources: &[Multiset]) -> Vec<Multiset> {
        let mut all: Vec<Multiset> = sources.to_vec();
        for (op, inputs) in &self.derived {
            let ins: Vec<&Multiset> = inputs.iter().map(|i| &all[*i]).collect();
            let out = op.oracle(&ins);
            all.push(out);
        }
        let views: Vec<Multiset> = self
            .views
            .iter()
            .map(|(l, r)| view_oracle(&all[*l], &all[*r]))
            .collect();
        all.extend(views);
        all
    }
}

/// A runtime fed the same source deltas whose replicas are followed by their counts only:
/// the stored replicas' counted in the dataflow (one runtime), or every replica's with the
/// views' derived from their inputs' records (the other).
struct Counted {
    rt: Runtime<u64>,
    subscriptions: Vec<CountSubscription>,
}

impl Counted {
    fn start(shape: &RandomDag, workers: usize, views: bool) -> Counted {
        let mut rt =
            Runtime::start(RuntimeConfig::new().with_workers(workers), shape.dag()).unwrap();
        let mut subscriptions = Vec::new();
        for i in 0..rt.dag().len() {
            let id = ReplicaId(i as u32);
            if views || !rt.dag().replica(id).is_view() {
                subscriptions.push(rt.subscribe_counts(id).unwrap());
            }
        }
        Counted { rt, subscriptions }
    }

    /// The counts delivered through `seq`, by replica then `Seq`.
    fn advance(&mut self, seq: prr_engine::Seq) -> Vec<DeltaCount> {
        self.rt.step_until(seq).unwrap();
        let mut all: Vec<DeltaCount> = (self.subscriptions.iter())
            .flat_map(|s| s.try_iter())
            .collect();
        all.sort_by_key(|c| (c.replica, c.seq));
        all
    }
}

fn run(seed: u64, workers: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let shape = RandomDag::generate(&mut rng);
    let mut rt = Runtime::start(RuntimeConfig::new().with_workers(workers), shape.dag()).unwrap();
    let mut log = DeltaLog::attach(&mut rt).unwrap();
    let mut counted = [false, true].map(|views| Counted::start(&shape, workers, views));
    let mut sources: Vec<Multiset> = vec![Multiset::new(); shape.sources];
    for _ in 0..12 {
        let mut delta = SourceDelta::new();
        for _ in 0..rng.random_range(0..6) {
            let s = rng.random_range(0..shape.sources);
            let present: Vec<u64> = sources[s].keys().copied().collect();
            if !present.is_empty() && rng.random_bool(0.35) {
                let x = present[rng.random_range(0..present.len())];
                delta.remove(ReplicaId(s as u32), x);
                let e = sources[s].get_mut(&x).unwrap();
                *e -= 1;
                if *e == 0 {
                    sources[s].remove(&x);
                }
            } else {
                let x = rng.random_range(0..30);
                delta.insert(ReplicaId(s as u32), x);
                *sources[s].entry(x).or_insert(0) += 1;
            }
        }
        for c in &mut counted {
            c.rt.push(delta.clone()).unwrap();
        }
        let seq = rt.push(delta).unwrap();
        let deltas = log
            .advance(&mut rt, seq)
            .unwrap_or_else(|m| panic!("seed {seed}, {workers} workers: {m}"));
        // Each delta's count, and nothing else, reaches a subscriber to counts.
        let mut expected_counts: Vec<DeltaCount> = deltas.iter().map(DeltaCount::of).collect();
        expected_counts.sort_by_key(|c| (c.replica, c.seq));
        for (c, views) in counted.iter_mut().zip([false, true]) {
            let mut want = expected_counts.clone();
            want.retain(|w| views || !rt.dag().replica(w.replica).is_view());
            assert_eq!(
                c.advance(seq),
                want,
                "seed {seed}, {workers} workers, views {views}"
            );
        }
        let expected = shape.oracle(&sources);
        // Replica ids follow the topological order, which is declaration order here.
        log.check(&mut rt, seq, |id, _| {
            Some(expected[id.index()].iter().map(|(x, d)| (*x, *d)).collect())
        })
        .unwrap_or_else(|m| {
            panic!(
                "seed {seed}, {workers} workers, dag {:?}, views {:?}: {m}",
                shape.derived, shape.views
            )
        });
    }
    rt.shutdown().unwrap();
    for c in counted {
        c.rt.shutdown().unwrap();
    }
}

#[test]
fn random_dags_match_the_oracle_with_one_worker() {
    for seed in 0..12 {
        run(seed, 1);
    }
}

#[test]
fn random_dags_match_the_oracle_with_two_workers() {
    for seed in 0..12 {
        run(seed, 2);
    }
}
