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
    let mut medians = Vec::new();
    let mut p99s = Vec::new();
    let mut samples = Vec::with_capacity(per_batch);
    for batch in 0..batches.max(1) {
        samples.clear();
        for i in 0..per_batch {
            let started = Instant::now();
            call(batch * per_batch + i);
            samples.push(started.elapsed().as_nanos() as f64);
        }
        samples.sort_by(f64::total_cmp);
        medians.push(samples[samples.len() / 2]);
        p99s.push(samples[(samples.len() * 99 / 100).min(samples.len() - 1)]);
    }
    let low = medians.iter().copied().fold(f64::INFINITY, f64::min);
    let high = medians.iter().copied().fold(0.0, f64::max);
    Figure {
        median: median(&mut medians),
        p99: median(&mut p99s),
        low,
        high,
    }
}

/// Decisions per second of `decide` over `items`, split across `threads`.
pub fn throughput<T: Sync>(items: &[T], threads: usize, decide: impl Fn(&T) + Sync) -> f64 {
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
