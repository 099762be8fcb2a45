//! The canary judge: whether a challenger may take its next traffic step, must be rolled
//! back, or needs more evidence, decided by tests that stay valid however often they look.
//!
//! Fixed-threshold checks (Flagger, Argo Rollouts) and per-interval tests (Kayenta's
//! Mann-Whitney) re-test a growing stream at every interval, so their false-alarm rate grows
//! with the number of looks. Here each metric is a count of *bad events* per variant (an HTTP
//! error, a wrong prediction on labelled feedback, a request slower than a bound), and the
//! judge runs a sequential test on which variant each bad event came from.
//!
//! With the challenger serving a share `w` of a metric's samples (its observed share of the
//! requests or labelled rows since the step began; the nominal weight only before there are
//! any), a bad event comes from the
//! challenger with probability `θ = w·λc / (w·λc + (1−w)·λb)`, where `λc` and `λb` are the
//! variants' bad-event rates. "The challenger is worse than tolerated", `λc > r·λb` for the
//! policy's tolerated ratio `r`, is `θ > θ0 = w·r / (w·r + 1 − w)`. Two mixture likelihood
//! ratios against `θ0` (a uniform mixture over a grid of alternatives above, and one below)
//! are e-processes: under the null their supremum over every look exceeds `1/α` with
//! probability at most `α` (Ville's inequality). So:
//! - **rollback** when the evidence that the challenger is worse reaches `1/α`;
//! - **promote-step** when every metric that asks for it has evidence of no harm at `1/α`,
//!   and the step has its minimum samples;
//! - **hold** otherwise, and **inconclusive** once the step's time is up.
//!
//! The evidence depends only on the counts at the time of the look, so the controller may
//! look as often as it likes. A step's evidence starts from zero: the share `w` is fixed
//! within a step.

use serde::{Deserialize, Serialize};

/// Points in each mixture: alternatives spread over `(θ0, 1)` (harm) and `(0, θ0)` (safety).
const GRID: usize = 64;

/// Bad events and requests of one variant since the step began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arm {
    /// Requests (or labelled predictions, for a quality metric).
    pub n: u64,
    /// Bad events among them.
    pub bad: u64,
}

/// One metric's counts for the champion and the challenger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricCounts {
    /// `errors`, `wrong_predictions`, `slow_requests`, ...
    pub metric: String,
    /// The champion's counts.
    pub champion: Arm,
    /// The challenger's counts.
    pub challenger: Arm,
}

/// How one metric is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricRule {
    /// Tolerated ratio of the challenger's bad-event rate to the champion's (1.1: up to 10%
    /// more errors); at least 1.
    pub max_ratio: f64,
    /// Whether a step needs evidence that this metric is not worse (a quality metric with
    /// labelled feedback), or only the absence of evidence that it is (errors, latency).
    pub needs_no_harm_evidence: bool,
}

/// The policy of one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRule {
    /// Error level: the chance of a false rollback (or a false promotion) in a step.
    pub alpha: f64,
    /// Challenger requests a step needs before it may promote.
    pub min_samples: u64,
    /// Seconds a step may last before it is inconclusive.
    pub time_limit_secs: u64,
}

/// What the judge decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Take the next traffic step (or, at 100%, promote).
    PromoteStep,
    /// Keep the step; look again later.
    Hold,
    /// Send all traffic back to the champion.
    Rollback,
    /// The step's time ran out without a decision (the policy says what follows).
    Inconclusive,
}

/// The evidence on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvidence {
    /// Metric name.
    pub metric: String,
    /// Bad-event rates: champion, challenger.
    pub rates: (f64, f64),
    /// Challenger rate over champion rate (`None` while the champion has no bad event).
    pub ratio: Option<f64>,
    /// The null boundary `θ0` for the share of bad events from the challenger.
    pub theta0: f64,
    /// The share observed.
    pub theta: Option<f64>,
    /// Evidence that the challenger is worse than tolerated (rollback at `1/α`).
    pub harm: f64,
    /// Evidence that it is not (needed for promotion where the rule asks for it).
    pub no_harm: f64,
}

/// A decision with everything it was made from (recorded in the audit event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The decision.
    pub verdict: Verdict,
    /// Why, in one sentence.
    pub reason: String,
    /// Challenger share of the traffic in this step.
    pub weight: f64,
    /// The evidence threshold `1/α`.
    pub threshold: f64,
    /// Per metric.
    pub metrics: Vec<MetricEvidence>,
}

/// log(Σ exp(x)) / n, stably.
fn log_mean_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + (xs.iter().map(|x| (x - m).exp()).sum::<f64>() / xs.len() as f64).ln()
}

/// The mixture likelihood ratio of `k` challenger events among `n` against `θ0`, over
/// alternatives above `θ0` (`above`) or below it. Each grid point's ratio is a
/// supermartingale under every θ on the null side, so their mean is an e-process.
pub fn mixture_evidence(k: u64, n: u64, theta0: f64, above: bool) -> f64 {
    if n == 0 || !(0.0..1.0).contains(&theta0) || theta0 <= 0.0 {
        return 1.0;
    }
    let (k, n) = (k as f64, n as f64);
    let logs: Vec<f64> = (1..=GRID)
        .map(|j| {
            // Denser near θ0, where small differences live.
            let u = 0.4 * (j as f64 / (GRID + 1) as f64).powi(2);
            let t = if above {
                theta0 + (1.0 - theta0) * u
            } else {
                theta0 * (1.0 - u)
            };
            k * (t / theta0).ln() + (n - k) * ((1.0 - t) / (1.0 - theta0)).ln()
        })
        .collect();
    log_mean_exp(&logs).exp()
}

/// Judges one step: `weight` is the challenger's share of the traffic (0 < w < 1), `elapsed`
/// the step's age, `rules` one per metric in `counts` order.
pub fn judge(
    step: &StepRule,
    weight: f64,
    counts: &[MetricCounts],
    rules: &[MetricRule],
    elapsed_secs: u64,
) -> Judgement {
    let threshold = 1.0 / step.alpha;
    let w = weight.clamp(1e-6, 1.0 - 1e-6);
    let metrics: Vec<MetricEvidence> = counts
        .iter()
        .zip(rules)
        .map(|(c, r)| {
            let ratio_bound = r.max_ratio.max(1.0);
            // The share the challenger actually got of this metric's samples: with a
            // request-level split (and rows or labels per request) it wanders around the
            // nominal weight, and judging by the nominal one reads that wander as harm.
            let w = if c.challenger.n > 0 && c.champion.n > 0 {
                (c.challenger.n as f64 / (c.challenger.n + c.champion.n) as f64)
                    .clamp(1e-6, 1.0 - 1e-6)
            } else {
                w
            };
            let theta0 = w * ratio_bound / (w * ratio_bound + 1.0 - w);
            let (kc, kb) = (c.challenger.bad, c.champion.bad);
            let rate = |a: Arm| {
                if a.n == 0 {
                    0.0
                } else {
                    a.bad as f64 / a.n as f64
                }
            };
            let (rb, rc) = (rate(c.champion), rate(c.challenger));
            MetricEvidence {
                metric: c.metric.clone(),
                rates: (rb, rc),
                ratio: (rb > 0.0).then(|| rc / rb),
                theta0,
                theta: (kc + kb > 0).then(|| kc as f64 / (kc + kb) as f64),
                harm: mixture_evidence(kc, kc + kb, theta0, true),
                no_harm: mixture_evidence(kc, kc + kb, theta0, false),
            }
        })
        .collect();
    let challenger_n = counts
        .iter()
        .map(|c| c.challenger.n)
        .max()
        .unwrap_or_default();
    let timed_out = elapsed_secs >= step.time_limit_secs;
    let wait = |why: String| {
        if timed_out {
            (
                Verdict::Inconclusive,
                format!("{why} when the step's {} s ran out", step.time_limit_secs),
            )
        } else {
            (Verdict::Hold, why)
        }
    };
    let lacking = metrics
        .iter()
        .zip(rules)
        .find(|(m, r)| r.needs_no_harm_evidence && m.no_harm < threshold)
        .map(|(m, _)| m);
    let (verdict, reason) = if let Some(m) = metrics.iter().find(|m| m.harm >= threshold) {
        (
            Verdict::Rollback,
            format!(
                "{}: the challenger is worse than tolerated (evidence {:.1} >= {threshold:.0})",
                m.metric, m.harm
            ),
        )
    } else if challenger_n == 0 {
        (
            Verdict::Hold,
            "no traffic reached the challenger: holding, never promoting without evidence".into(),
        )
    } else if challenger_n < step.min_samples {
        wait(format!(
            "{challenger_n} of {} challenger samples",
            step.min_samples
        ))
    } else if let Some(m) = lacking {
        wait(format!(
            "{}: not shown to be no worse (evidence {:.1} of {threshold:.0})",
            m.metric, m.no_harm
        ))
    } else {
        (
            Verdict::PromoteStep,
            format!(
                "{challenger_n} challenger samples, no metric worse than tolerated, and every quality metric shown no worse"
            ),
        )
    };
    Judgement {
        verdict,
        reason,
        weight: w,
        threshold,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(b: (u64, u64), c: (u64, u64)) -> Vec<MetricCounts> {
        vec![MetricCounts {
            metric: "wrong_predictions".into(),
            champion: Arm { n: b.0, bad: b.1 },
            challenger: Arm { n: c.0, bad: c.1 },
        }]
    }

    const STEP: StepRule = StepRule {
        alpha: 0.05,
        min_samples: 200,
        time_limit_secs: 3600,
    };
    const QUALITY: MetricRule = MetricRule {
        max_ratio: 1.2,
        needs_no_harm_evidence: true,
    };

    #[test]
    fn evidence_is_one_before_any_event_and_grows_with_a_real_difference() {
        assert_eq!(mixture_evidence(0, 0, 0.5, true), 1.0);
        let worse = mixture_evidence(80, 100, 0.5, true);
        let same = mixture_evidence(50, 100, 0.5, true);
        assert!(worse > 100.0, "{worse}");
        assert!(same < 1.0, "{same}");
        assert!(mixture_evidence(20, 100, 0.5, false) > 100.0);
    }

    #[test]
    fn verdicts() {
        let rules = [QUALITY];
        // Challenger (half the traffic) wrong three times as often: rollback.
        let j = judge(&STEP, 0.5, &counts((1000, 50), (1000, 150)), &rules, 60);
        assert_eq!(j.verdict, Verdict::Rollback, "{j:?}");
        // Equally good with plenty of samples: no harm shown, promote.
        let j = judge(&STEP, 0.5, &counts((5000, 250), (5000, 200)), &rules, 60);
        assert_eq!(j.verdict, Verdict::PromoteStep, "{j:?}");
        // No traffic to the challenger: hold, never promote.
        let j = judge(&STEP, 0.1, &counts((1000, 50), (0, 0)), &rules, 60);
        assert_eq!(j.verdict, Verdict::Hold, "{j:?}");
        // Too few samples: hold, then inconclusive when time is up.
        let j = judge(&STEP, 0.5, &counts((50, 3), (50, 2)), &rules, 60);
        assert_eq!(j.verdict, Verdict::Hold, "{j:?}");
        let j = judge(&STEP, 0.5, &counts((50, 3), (50, 2)), &rules, 4000);
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
        // A metric that needs no evidence of no harm promotes on samples alone.
        let health = [MetricRule {
            max_ratio: 1.5,
            needs_no_harm_evidence: false,
        }];
        let j = judge(&STEP, 0.5, &counts((1000, 0), (1000, 0)), &health, 60);
        assert_eq!(j.verdict, Verdict::PromoteStep, "{j:?}");
    }

    /// Under the null, the chance that the evidence ever reaches 1/α over many looks stays
    /// below α: simulated with a fixed-seed generator, 2,000 streams of 400 events, looking
    /// after every event.
    #[test]
    fn looking_after_every_event_keeps_false_alarms_below_alpha() {
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let theta0 = 0.3;
        let (mut alarms, streams) = (0, 2000);
        for _ in 0..streams {
            let mut k = 0;
            for n in 1..=400u64 {
                k += u64::from(next() < theta0);
                if mixture_evidence(k, n, theta0, true) >= 20.0 {
                    alarms += 1;
                    break;
                }
            }
        }
        let rate = alarms as f64 / streams as f64;
        assert!(rate <= 0.05, "false alarm rate {rate}");
    }
}
