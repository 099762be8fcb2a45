//! Canary deciders on the same simulated streams: falaj's judge (anytime-valid), a
//! Flagger-style fixed threshold checked every interval, and a Kayenta-style Mann-Whitney
//! test per interval at 98%. `cargo bench -p falaj-core --bench canary`; figures in
//! docs/benchmarks.md.
//!
//! A stream: every interval, 200 labelled predictions, a share `w` = 25% of them served by
//! the challenger; the champion is right 90% of the time; the challenger 90% (nothing
//! changed) or 85% (a 5-point drop). At most 40 intervals (a step's time limit). Each
//! decider sees the same streams (same seeds) and tolerates the same degradation: 2 points of
//! accuracy (10% → 12% errors, a ratio of 1.2).

use falaj_core::canary::{Arm, MetricCounts, MetricRule, StepRule, Verdict, judge};

const SIMS: u64 = 1000;
const INTERVALS: usize = 40;
const PER_INTERVAL: usize = 200;
const WEIGHT: f64 = 0.25;
const BASE_ACC: f64 = 0.90;
const TOLERANCE: f64 = 0.02;

/// splitmix64: a seeded, dependency-free generator.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One interval: (champion outcomes, challenger outcomes), 1.0 = right.
type Interval = (Vec<f64>, Vec<f64>);

fn stream(seed: u64, challenger_acc: f64) -> Vec<Interval> {
    let mut r = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x5EED);
    (0..INTERVALS)
        .map(|_| {
            let (mut b, mut c) = (Vec::new(), Vec::new());
            for _ in 0..PER_INTERVAL {
                if r.unit() < WEIGHT {
                    c.push(f64::from(u8::from(r.unit() < challenger_acc)));
                } else {
                    b.push(f64::from(u8::from(r.unit() < BASE_ACC)));
                }
            }
            (b, c)
        })
        .collect()
}

/// When a decider rolled back: the interval index, or `None`.
type Decider = fn(&[Interval]) -> Option<usize>;

/// falaj's judge with no tolerance (rolls back on evidence of any degradation, the null
/// Kayenta tests) or the 2-point tolerance.
fn falaj_strict(s: &[Interval]) -> Option<usize> {
    falaj(s, 1.0)
}

fn falaj_tolerant(s: &[Interval]) -> Option<usize> {
    falaj(s, (1.0 - BASE_ACC + TOLERANCE) / (1.0 - BASE_ACC))
}

fn falaj(s: &[Interval], max_ratio: f64) -> Option<usize> {
    let step = StepRule {
        alpha: 0.05,
        min_samples: u64::MAX,
        time_limit_secs: u64::MAX,
    };
    let rule = [MetricRule {
        max_ratio,
        needs_no_harm_evidence: true,
    }];
    let (mut b, mut c) = (Arm::default(), Arm::default());
    for (i, (xb, xc)) in s.iter().enumerate() {
        b.n += xb.len() as u64;
        b.bad += xb.iter().filter(|x| **x == 0.0).count() as u64;
        c.n += xc.len() as u64;
        c.bad += xc.iter().filter(|x| **x == 0.0).count() as u64;
        let counts = [MetricCounts {
            metric: "wrong_predictions".into(),
            champion: b,
            challenger: c,
        }];
        if judge(&step, WEIGHT, &counts, &rule, 0).verdict == Verdict::Rollback {
            return Some(i);
        }
    }
    None
}

/// Flagger-style: each interval the challenger's accuracy must be at least the champion's
/// known accuracy less a margin (2 points, the tolerance; or 5); 5 failed checks (Flagger's
/// `threshold`) roll back.
fn flagger_2(s: &[Interval]) -> Option<usize> {
    flagger(s, TOLERANCE)
}

fn flagger_5(s: &[Interval]) -> Option<usize> {
    flagger(s, 0.05)
}

fn flagger(s: &[Interval], margin: f64) -> Option<usize> {
    let mut failed = 0;
    for (i, (_, xc)) in s.iter().enumerate() {
        if xc.is_empty() {
            continue;
        }
        let acc = xc.iter().sum::<f64>() / xc.len() as f64;
        if acc < BASE_ACC - margin {
            failed += 1;
            if failed >= 5 {
                return Some(i);
            }
        }
    }
    None
}

/// Two-sided Mann-Whitney U p-value (normal approximation, tie-corrected).
fn mann_whitney_p(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    if a.is_empty() || b.is_empty() {
        return 1.0;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|x| (*x, true))
        .chain(b.iter().map(|x| (*x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_a, mut ties, mut i) = (0.0, 0.0, 0);
    while i < n {
        let mut j = i;
        while j < n && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        rank_a += all[i..j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j;
    }
    let u = rank_a - n1 * (n1 + 1.0) / 2.0;
    let nn = n1 + n2;
    let var = n1 * n2 / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - n1 * n2 / 2.0).abs() / var.sqrt();
    erfc(z / std::f64::consts::SQRT_2)
}

/// erfc by Abramowitz-Stegun 7.1.26 (error below 1.5e-7).
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    poly * (-x * x).exp()
}

/// Kayenta-style: each interval, Mann-Whitney on that interval's outcomes at 98%; a
/// challenger significantly worse fails the run and rolls back.
fn kayenta(s: &[Interval]) -> Option<usize> {
    for (i, (xb, xc)) in s.iter().enumerate() {
        let mean = |x: &[f64]| x.iter().sum::<f64>() / (x.len().max(1) as f64);
        let worse = mean(xc) < mean(xb);
        if worse && mann_whitney_p(xc, xb) < 0.02 {
            return Some(i);
        }
    }
    None
}

struct Row {
    rollbacks: u64,
    labelled: Vec<usize>,
    exposed: Vec<usize>,
}

fn run(d: Decider, challenger_acc: f64, seed0: u64) -> Row {
    let mut row = Row {
        rollbacks: 0,
        labelled: Vec::new(),
        exposed: Vec::new(),
    };
    for sim in 0..SIMS {
        let s = stream(seed0 + sim, challenger_acc);
        if let Some(i) = d(&s) {
            row.rollbacks += 1;
            row.labelled
                .push(s[..=i].iter().map(|(b, c)| b.len() + c.len()).sum());
            row.exposed.push(s[..=i].iter().map(|(_, c)| c.len()).sum());
        }
    }
    row
}

fn median(v: &mut [usize]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    v[v.len() / 2].to_string()
}

fn main() {
    let deciders: [(&str, Decider); 5] = [
        ("falaj, alpha 5%, no tolerance", falaj_strict),
        ("falaj, alpha 5%, 2-point tolerance", falaj_tolerant),
        ("Flagger-style, >= 88% per interval", flagger_2),
        ("Flagger-style, >= 85% per interval", flagger_5),
        ("Kayenta-style, Mann-Whitney 98%", kayenta),
    ];
    println!(
        "{SIMS} seeded streams per scenario; {INTERVALS} intervals of {PER_INTERVAL} labelled predictions, challenger share {WEIGHT}; champion accuracy {BASE_ACC}; tolerance {TOLERANCE}"
    );
    println!(
        "{:<42} {:>16} {:>16} {:>22} {:>22}",
        "decider",
        "false rollbacks",
        "drop caught",
        "median labelled to catch",
        "median exposed (chall.)"
    );
    for (name, d) in deciders {
        let null = run(d, BASE_ACC, 1);
        let mut drop = run(d, BASE_ACC - 0.05, 100_001);
        println!(
            "{:<42} {:>15.1}% {:>15.1}% {:>22} {:>22}",
            name,
            100.0 * null.rollbacks as f64 / SIMS as f64,
            100.0 * drop.rollbacks as f64 / SIMS as f64,
            median(&mut drop.labelled),
            median(&mut drop.exposed)
        );
    }
}
