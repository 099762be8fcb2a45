//! The arithmetic of the gates: quality metrics, fairness gaps, seeded noise, percentiles.
//! Plain functions over slices, tested against values worked out by hand.

use std::collections::{BTreeMap, HashMap};

use falaj_core::policy::Metric;
use rand::{Rng, SeedableRng};

/// The `q` quantile (0-1) by nearest rank; sorts `v`. NaN when empty.
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Index of the largest value in each row of `k` values.
pub fn argmax_rows(probs: &[f64], k: usize) -> Vec<usize> {
    probs
        .chunks(k)
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, v)| {
                    if *v > bv { (i, *v) } else { (bi, bv) }
                })
                .0
        })
        .collect()
}

/// RMSE, MAE and R².
pub fn regression(y: &[f64], pred: &[f64]) -> BTreeMap<Metric, f64> {
    let n = y.len().max(1) as f64;
    let mse = y
        .iter()
        .zip(pred)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / n;
    let mae = y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let mean = y.iter().sum::<f64>() / n;
    let ss_tot = y.iter().map(|a| (a - mean).powi(2)).sum::<f64>();
    let r2 = if ss_tot == 0.0 {
        f64::NAN
    } else {
        1.0 - mse * n / ss_tot
    };
    BTreeMap::from([
        (Metric::Rmse, mse.sqrt()),
        (Metric::Mae, mae),
        (Metric::R2, r2),
    ])
}

/// Area under the ROC curve of `scores` for `positive` labels (Mann-Whitney, ties averaged).
/// NaN when either class is absent.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> f64 {
    let p = positive.iter().filter(|x| **x).count();
    let n = positive.len() - p;
    if p == 0 || n == 0 {
        return f64::NAN;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1..=j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        rank_sum += idx[i..=j].iter().filter(|k| positive[**k]).count() as f64 * avg;
        i = j + 1;
    }
    (rank_sum - (p * (p + 1)) as f64 / 2.0) / (p as f64 * n as f64)
}

fn prf(truth: &[usize], pred: &[usize], class: usize) -> (f64, f64, f64) {
    let tp = truth
        .iter()
        .zip(pred)
        .filter(|(t, p)| **t == class && **p == class)
        .count() as f64;
    let fp = truth
        .iter()
        .zip(pred)
        .filter(|(t, p)| **t != class && **p == class)
        .count() as f64;
    let fneg = truth
        .iter()
        .zip(pred)
        .filter(|(t, p)| **t == class && **p != class)
        .count() as f64;
    let precision = if tp + fp == 0.0 { 0.0 } else { tp / (tp + fp) };
    let recall = if tp + fneg == 0.0 {
        0.0
    } else {
        tp / (tp + fneg)
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

/// Accuracy, precision, recall, F1 and ROC-AUC. Binary (`k == 2`): of the `positive` class.
/// Multiclass: macro averages over the classes, AUC one-vs-rest.
pub fn classification(
    truth: &[usize],
    pred: &[usize],
    probs: &[f64],
    k: usize,
    positive: usize,
) -> BTreeMap<Metric, f64> {
    let n = truth.len().max(1) as f64;
    let accuracy = truth.iter().zip(pred).filter(|(t, p)| t == p).count() as f64 / n;
    let (precision, recall, f1, auc) = if k == 2 {
        let (p, r, f) = prf(truth, pred, positive);
        let scores: Vec<f64> = probs.chunks(k).map(|r| r[positive]).collect();
        let pos: Vec<bool> = truth.iter().map(|t| *t == positive).collect();
        (p, r, f, roc_auc(&scores, &pos))
    } else {
        let mut sums = (0.0, 0.0, 0.0);
        let mut aucs = Vec::new();
        for c in 0..k {
            let (p, r, f) = prf(truth, pred, c);
            sums = (sums.0 + p, sums.1 + r, sums.2 + f);
            let scores: Vec<f64> = probs.chunks(k).map(|r| r[c]).collect();
            let pos: Vec<bool> = truth.iter().map(|t| *t == c).collect();
            let a = roc_auc(&scores, &pos);
            if !a.is_nan() {
                aucs.push(a);
            }
        }
        let kf = k as f64;
        let auc = if aucs.is_empty() {
            f64::NAN
        } else {
            aucs.iter().sum::<f64>() / aucs.len() as f64
        };
        (sums.0 / kf, sums.1 / kf, sums.2 / kf, auc)
    };
    // Top-5: the true class among the five highest scores (every row, with five classes or
    // fewer).
    let top5 = truth
        .iter()
        .zip(probs.chunks(k.max(1)))
        .filter(|(t, row)| {
            let mine = row.get(**t).copied().unwrap_or(f64::NEG_INFINITY);
            row.iter().filter(|s| **s > mine).count() < 5
        })
        .count() as f64
        / n;
    BTreeMap::from([
        (Metric::Accuracy, accuracy),
        (Metric::Top1Accuracy, accuracy),
        (Metric::Top5Accuracy, top5),
        (Metric::MinClassRecall, min_class_recall(truth, pred, k)),
        (Metric::Precision, precision),
        (Metric::Recall, recall),
        (Metric::F1, f1),
        (Metric::RocAuc, auc),
    ])
}

/// The lowest recall over the classes present in `truth`.
pub fn min_class_recall(truth: &[usize], pred: &[usize], k: usize) -> f64 {
    (0..k)
        .filter_map(|c| {
            let n = truth.iter().filter(|t| **t == c).count();
            (n > 0).then(|| {
                truth
                    .iter()
                    .zip(pred)
                    .filter(|(t, p)| **t == c && **p == c)
                    .count() as f64
                    / n as f64
            })
        })
        .fold(f64::NAN, f64::min)
}

/// `x` moved by `shift` times each feature's standard deviation (a brighter image).
pub fn shift_brightness(x: &[f32], n_features: usize, shift: f64) -> Vec<f32> {
    let std = feature_std(x, n_features);
    x.iter()
        .enumerate()
        .map(|(i, v)| (f64::from(*v) + shift * std[i % n_features.max(1)]) as f32)
        .collect()
}

fn feature_std(x: &[f32], n_features: usize) -> Vec<f64> {
    let rows = x.len() / n_features.max(1);
    let mut std = vec![0.0f64; n_features];
    for (j, s) in std.iter_mut().enumerate() {
        let col = (0..rows).map(|i| f64::from(x[i * n_features + j]));
        let mean = col.clone().sum::<f64>() / rows.max(1) as f64;
        *s = (col.map(|v| (v - mean).powi(2)).sum::<f64>() / rows.max(1) as f64).sqrt();
    }
    std
}

/// Fairness gaps across groups.
#[derive(Debug, Clone, PartialEq)]
pub struct Fairness {
    /// Largest minus smallest favourable-prediction rate.
    pub demographic_parity: f64,
    /// Largest minus smallest true-positive rate (groups without positives are skipped).
    pub equal_opportunity: f64,
    /// Groups seen.
    pub groups: usize,
    /// Each group's rates, by group name.
    pub by_group: Vec<falaj_core::policy::GroupRate>,
}

/// Demographic-parity and equal-opportunity differences.
pub fn fairness(groups: &[String], favourable: &[bool], actual: &[bool]) -> Fairness {
    // (rows, favourable, actual positives, favourable among actual positives)
    let mut by: HashMap<&str, (f64, f64, f64, f64)> = HashMap::new();
    for ((g, f), a) in groups.iter().zip(favourable).zip(actual) {
        let e = by.entry(g.as_str()).or_default();
        e.0 += 1.0;
        e.1 += f64::from(u8::from(*f));
        e.2 += f64::from(u8::from(*a));
        e.3 += f64::from(u8::from(*a && *f));
    }
    let gap = |v: Vec<f64>| {
        if v.len() < 2 {
            0.0
        } else {
            v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
        }
    };
    Fairness {
        demographic_parity: gap(by.values().map(|e| e.1 / e.0).collect()),
        equal_opportunity: gap(by
            .values()
            .filter(|e| e.2 > 0.0)
            .map(|e| e.3 / e.2)
            .collect()),
        groups: by.len(),
        by_group: {
            let mut v: Vec<_> = by
                .iter()
                .map(|(g, e)| falaj_core::policy::GroupRate {
                    group: g.to_string(),
                    rows: e.0 as u64,
                    selection_rate: e.1 / e.0,
                    true_positive_rate: (e.2 > 0.0).then(|| e.3 / e.2),
                })
                .collect();
            v.sort_by(|a, b| a.group.cmp(&b.group));
            v
        },
    }
}

/// `x` plus Gaussian noise of `scale` times each feature's standard deviation, seeded.
pub fn add_noise(x: &[f32], n_features: usize, scale: f64, seed: u64) -> Vec<f32> {
    let std = feature_std(x, n_features);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            // Box-Muller: one standard normal from two uniforms.
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (f64::from(*v) + z * scale * std[i % n_features]) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_hand() {
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            0.75
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), 0.5);
        assert!(roc_auc(&[0.5], &[true]).is_nan());
    }

    #[test]
    fn classification_by_hand() {
        let truth = [1, 1, 0, 0];
        let pred = [1, 0, 0, 1];
        let probs = [0.2, 0.8, 0.6, 0.4, 0.9, 0.1, 0.3, 0.7];
        let m = classification(&truth, &pred, &probs, 2, 1);
        assert_eq!(m[&Metric::Accuracy], 0.5);
        assert_eq!(m[&Metric::Precision], 0.5);
        assert_eq!(m[&Metric::Recall], 0.5);
        assert_eq!(m[&Metric::F1], 0.5);
        assert_eq!(m[&Metric::RocAuc], 0.75);
    }

    #[test]
    fn regression_by_hand() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert!((m[&Metric::Rmse] - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m[&Metric::Mae] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m[&Metric::R2] - (1.0 - 4.0 / 2.0)).abs() < 1e-12);
    }

    #[test]
    fn fairness_by_hand() {
        let g: Vec<String> = ["a", "a", "b", "b"].iter().map(|s| s.to_string()).collect();
        let f = fairness(&g, &[true, true, true, false], &[true, false, true, true]);
        assert_eq!(f.demographic_parity, 0.5);
        assert_eq!(f.equal_opportunity, 0.5);
        assert_eq!(f.groups, 2);
        let a = &f.by_group[0];
        assert_eq!((a.group.as_str(), a.rows), ("a", 2));
        assert_eq!((a.selection_rate, a.true_positive_rate), (1.0, Some(1.0)));
        let b = &f.by_group[1];
        assert_eq!((b.selection_rate, b.true_positive_rate), (0.5, Some(0.5)));
    }

    #[test]
    fn noise_is_seeded_and_scaled() {
        let x = [0.0f32, 10.0, 2.0, 20.0, 4.0, 30.0];
        assert_eq!(add_noise(&x, 2, 0.1, 1), add_noise(&x, 2, 0.1, 1));
        assert_ne!(add_noise(&x, 2, 0.1, 1), add_noise(&x, 2, 0.1, 2));
        let mut v = vec![3.0, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.99), 4.0);
        assert_eq!(percentile(&mut v, 0.5), 2.0);
    }
}
