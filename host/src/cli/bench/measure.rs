//! How the bench measures: per-call latencies in batches (median of the batch medians,
//! median p99, spread), and throughput over threads.

use std::time::Instant;

/// Median, p99 and spread of per-call latencies over batches, in nanoseconds.
pub struct Figure {
    pub median: f64,
    pub p99: f64,
    pub low: f64,
    pub high: f64,
}

impl Figure {
    pub fn line(&self, name: &str) -> String {
        format!(
            "{name:<44} median {:>8.2} us   p99 {:>8.2} us   spread {:.2}..{:.2} us",
            self.median / 1e3,
            self.p99 / 1e3,
            self.low / 1e3,
            self.high / 1e3
        )
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Time `call(i)` for i in 0..n, call by call, in `batches` batches.
pub fn measure(n: usize, batches: usize, mut call: impl FnMut(usize)) -> Figure {
    let per_batch = (n / batches.max(1)).max(1);
    let mut figures = Batches::default();
    let mut samples = Vec::with_capacity(per_batch);
    for batch in 0..batches.max(1) {
        samples.clear();
        for i in 0..per_batch {
            let started = Instant::now();
            call(batch * per_batch + i);
            samples.push(started.elapsed().as_nanos() as f64);
        }
        figures.add(&mut samples);
    }
    figures.figure()
}

/// Time `a(i)` and `b(i)` for i in 0..n, alternating call by call (a, b, a, b...) in
/// `batches` batches: the two sides see the same moment of a drifting machine, so
/// their ratio is fair where two blocks measured one after the other are not.
pub fn measure_pair(n: usize, batches: usize, mut a: impl FnMut(usize), mut b: impl FnMut(usize)) -> (Figure, Figure) {
    let per_batch = (n / batches.max(1)).max(1);
    let (mut a_figures, mut b_figures) = (Batches::default(), Batches::default());
    let (mut a_samples, mut b_samples) = (Vec::with_capacity(per_batch), Vec::with_capacity(per_batch));
    for batch in 0..batches.max(1) {
        a_samples.clear();
        b_samples.clear();
        for i in 0..per_batch {
            let index = batch * per_batch + i;
            let started = Instant::now();
            a(index);
            a_samples.push(started.elapsed().as_nanos() as f64);
            let started = Instant::now();
            b(index);
            b_samples.push(started.elapsed().as_nanos() as f64);
        }
        a_figures.add(&mut a_samples);
        b_figures.add(&mut b_samples);
    }
    (a_figures.figure(), b_figures.figure())
}

/// The medians and p99s of batches, as they are measured.
#[derive(Default)]
struct Batches {
    medians: Vec<f64>,
    p99s: Vec<f64>,
}

impl Batches {
    fn add(&mut self, samples: &mut [f64]) {
        samples.sort_by(f64::total_cmp);
        self.medians.push(samples[samples.len() / 2]);
        self.p99s
            .push(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]);
    }

    fn figure(mut self) -> Figure {
        let low = self.medians.iter().copied().fold(f64::INFINITY, f64::min);
        let high = self.medians.iter().copied().fold(0.0, f64::max);
        Figure {
            median: median(&mut self.medians),
            p99: median(&mut self.p99s),
            low,
            high,
        }
    }
}

/// Decisions per second of `decide` over `items`, split across `threads`.
fn throughput<T: Sync>(items: &[T], threads: usize, decide: impl Fn(&T) + Sync) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let decide = &decide;
            scope.spawn(move || {
                for item in items.iter().skip(t).step_by(threads) {
                    decide(item);
                }
            });
        }
    });
    items.len() as f64 / started.elapsed().as_secs_f64()
}

/// Decisions per second on 1 thread and on `threads`, measured in turns.
#[derive(Clone, Copy, Debug)]
pub struct Scaling {
    /// The median of the rounds on 1 thread.
    pub one: f64,
    /// The median of the rounds on `threads`.
    pub many: f64,
    /// The median of the rounds' ratios, many / one.
    pub ratio: f64,
}

/// Throughput on 1 thread and on `threads`, taking turns over `rounds` rounds, each
/// side on a slice of `items` of its own (which side goes first alternates too), so
/// that the machine's drift falls on both alike: one sample a side, taken one after
/// the other, moved from 1.02 x to 2.05 x between runs here.
pub fn scaling<T: Sync>(items: &[T], threads: usize, rounds: usize, decide: impl Fn(&T) + Sync) -> Scaling {
    let rounds = rounds.max(1);
    let chunk = (items.len() / (2 * rounds)).max(1);
    let slice = |k: usize| &items[(k * chunk).min(items.len())..((k + 1) * chunk).min(items.len())];
    let (mut ones, mut manys, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (first, second) = (slice(2 * round), slice(2 * round + 1));
        let (one, many) = if round % 2 == 0 {
            let one = throughput(first, 1, &decide);
            (one, throughput(second, threads, &decide))
        } else {
            let many = throughput(first, threads, &decide);
            (throughput(second, 1, &decide), many)
        };
        ones.push(one);
        manys.push(many);
        ratios.push(many / one);
    }
    Scaling {
        one: median(&mut ones),
        many: median(&mut manys),
        ratio: median(&mut ratios),
    }
}
