//! [`Dist`]: a distribution of delays in milliseconds, its checked
//! constructors, inverse-CDF sampling and mean. The string form lives in
//! `syntax.rs`.
//!
//! Every constructor checks its parameters, so a `Dist` always samples
//! finite, non-negative delays: the node will sleep for them.

use std::sync::Arc;

use rand::Rng;

use crate::error::Error;

/// How far from 1 a mixture's weights may sum (they are kept as given and
/// normalised when sampling).
pub(crate) const WEIGHT_TOLERANCE: f64 = 1e-6;

/// A distribution of delays in milliseconds.
///
/// Build one with the constructors or parse its string form
/// (`"mix:0.9*pareto:0.235,10+0.1*exp:0.6"`, see the crate docs); `Display`
/// prints the form that parses back to an equal value.
#[derive(Debug, Clone, PartialEq)]
pub struct Dist(pub(crate) Kind);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Const(f64),
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// Exponential of mean `mean` (rate 1/mean).
    Exp {
        mean: f64,
    },
    /// Survival `(xm/x)^alpha` for `x >= xm`.
    Pareto {
        xm: f64,
        alpha: f64,
    },
    Mix(Mixture),
    Empirical(Empirical),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mixture {
    /// (weight, part), weights as given.
    pub(crate) parts: Vec<(f64, Dist)>,
    /// Running sums of the weights over their total, the last exactly 1:
    /// a uniform draw picks the first part whose bound exceeds it.
    bounds: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Empirical {
    /// The samples, ascending (shared: a large file is loaded once and
    /// cloned into every leg that uses it).
    pub(crate) sorted: Arc<[f64]>,
    /// The file they came from, or `None` when given inline or in code.
    pub(crate) file: Option<String>,
}

/// Checks that `v` (shown as `token`) is finite and satisfies `ok`.
pub(crate) fn check(
    v: f64,
    ok: bool,
    input: &str,
    token: &str,
    what: &'static str,
    bound: &'static str,
) -> Result<f64, Error> {
    if v.is_finite() && ok {
        Ok(v)
    } else {
        Err(Error::OutOfRange {
            input: input.to_string(),
            token: token.to_string(),
            what,
            bound,
        })
    }
}

impl Dist {
    /// Always `ms` (finite, `>= 0`).
    pub fn constant(ms: f64) -> Result<Dist, Error> {
        let input = format!("const:{ms}");
        check(ms, ms >= 0.0, &input, &ms.to_string(), "delay", ">= 0")?;
        Ok(Dist(Kind::Const(ms)))
    }

    /// Uniform on `[lo, hi]` (`0 <= lo <= hi`).
    pub fn uniform(lo: f64, hi: f64) -> Result<Dist, Error> {
        let input = format!("uniform:{lo}..{hi}");
        check(
            lo,
            lo >= 0.0,
            &input,
            &lo.to_string(),
            "lower bound",
            ">= 0",
        )?;
        check(
            hi,
            hi >= lo,
            &input,
            &hi.to_string(),
            "upper bound",
            ">= the lower bound",
        )?;
        Ok(Dist(Kind::Uniform { lo, hi }))
    }

    /// Exponential with mean `mean` ms (`> 0`).
    pub fn exp(mean: f64) -> Result<Dist, Error> {
        let input = format!("exp:{mean}");
        check(mean, mean > 0.0, &input, &mean.to_string(), "mean", "> 0")?;
        Ok(Dist(Kind::Exp { mean }))
    }

    /// Exponential with rate `lambda` per ms, as the PBS paper writes
    /// them: the mean is `1 / lambda`.
    pub fn exp_rate(lambda: f64) -> Result<Dist, Error> {
        let input = format!("rate {lambda}");
        check(
            lambda,
            lambda > 0.0,
            &input,
            &lambda.to_string(),
            "rate",
            "> 0",
        )?;
        Dist::exp(1.0 / lambda)
    }

    /// Pareto with scale `xm` ms and shape `alpha`: `P(X > x) = (xm/x)^alpha`
    /// for `x >= xm` (both `> 0`; the mean is finite for `alpha > 1`).
    pub fn pareto(xm: f64, alpha: f64) -> Result<Dist, Error> {
        let input = format!("pareto:{xm},{alpha}");
        check(xm, xm > 0.0, &input, &xm.to_string(), "scale x_m", "> 0")?;
        check(
            alpha,
            alpha > 0.0,
            &input,
            &alpha.to_string(),
            "shape alpha",
            "> 0",
        )?;
        Ok(Dist(Kind::Pareto { xm, alpha }))
    }

    /// A mixture: with probability `weight` a draw comes from that part.
    /// Weights must be positive and sum to 1 within 1e-6; parts may not be
    /// mixtures themselves.
    pub fn mixture(parts: Vec<(f64, Dist)>) -> Result<Dist, Error> {
        let input = Dist::mix_unchecked(parts.clone()).to_string();
        Dist::mixture_of(parts, &input, None)
    }

    /// [`Dist::mixture`] of `parts` parsed from `input`, whose weights
    /// were written as `tokens` (for the error messages).
    pub(crate) fn mixture_of(
        parts: Vec<(f64, Dist)>,
        input: &str,
        tokens: Option<&[&str]>,
    ) -> Result<Dist, Error> {
        if parts.is_empty() {
            return Err(Error::Params {
                input: input.to_string(),
                kind: "mix",
                expected: "one or more WEIGHT*DIST parts joined by +",
            });
        }
        for (i, (w, d)) in parts.iter().enumerate() {
            let token = tokens
                .and_then(|t| t.get(i))
                .map_or_else(|| w.to_string(), |t| t.to_string());
            check(*w, *w > 0.0, input, &token, "weight", "> 0")?;
            if matches!(d.0, Kind::Mix(_)) {
                return Err(Error::NestedMix {
                    input: input.to_string(),
                });
            }
        }
        let sum: f64 = parts.iter().map(|(w, _)| w).sum();
        if (sum - 1.0).abs() > WEIGHT_TOLERANCE {
            return Err(Error::WeightsSum {
                input: input.to_string(),
                sum,
            });
        }
        Ok(Dist::mix_unchecked(parts))
    }

    /// A mixture of parts known to be valid (the presets).
    pub(crate) fn mix_unchecked(parts: Vec<(f64, Dist)>) -> Dist {
        let sum: f64 = parts.iter().map(|(w, _)| w).sum();
        let mut run = 0.0;
        let mut bounds: Vec<f64> = parts
            .iter()
            .map(|(w, _)| {
                run += w;
                run / sum
            })
            .collect();
        if let Some(last) = bounds.last_mut() {
            *last = 1.0;
        }
        Dist(Kind::Mix(Mixture { parts, bounds }))
    }

    /// The distribution of `samples` (ms, finite, `>= 0`, at least one),
    /// e.g. a live cluster's measured delays: a draw interpolates linearly
    /// between neighbouring order statistics, so it is continuous and
    /// stays within the samples' range.
    pub fn empirical(samples: Vec<f64>) -> Result<Dist, Error> {
        Dist::empirical_from(samples, None, "empirical:[…]")
    }

    /// [`Dist::empirical`] of samples read from `file`, which its string
    /// form names (`empirical:FILE`).
    pub fn empirical_file(file: &str, samples: Vec<f64>) -> Result<Dist, Error> {
        Dist::empirical_from(
            samples,
            Some(file.to_string()),
            &format!("empirical:{file}"),
        )
    }

    pub(crate) fn empirical_from(
        mut samples: Vec<f64>,
        file: Option<String>,
        input: &str,
    ) -> Result<Dist, Error> {
        if samples.is_empty() {
            return Err(Error::NoSamples {
                input: input.to_string(),
            });
        }
        for v in &samples {
            check(*v, *v >= 0.0, input, &v.to_string(), "sample", ">= 0")?;
        }
        samples.sort_by(f64::total_cmp);
        Ok(Dist(Kind::Empirical(Empirical {
            sorted: samples.into(),
            file,
        })))
    }

    /// One delay in ms, drawn by inverse CDF from `rng`.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match &self.0 {
            Kind::Const(v) => *v,
            Kind::Uniform { lo, hi } => lo + (hi - lo) * rng.random::<f64>(),
            // `1 - u` lies in (0, 1], so the logarithm and the power are
            // finite; only absurd parameters (a shape near 0) overflow, and
            // `min` keeps even those finite.
            Kind::Exp { mean } => (-mean * (1.0 - rng.random::<f64>()).ln()).min(f64::MAX),
            Kind::Pareto { xm, alpha } => {
                (xm * (1.0 - rng.random::<f64>()).powf(-1.0 / alpha)).min(f64::MAX)
            }
            Kind::Mix(m) => {
                let u = rng.random::<f64>();
                let i = m
                    .bounds
                    .iter()
                    .position(|&b| u < b)
                    .unwrap_or(m.parts.len() - 1);
                m.parts[i].1.sample(rng)
            }
            Kind::Empirical(e) => {
                let s = &e.sorted;
                if s.len() == 1 {
                    return s[0];
                }
                let at = rng.random::<f64>() * (s.len() - 1) as f64;
                let i = (at as usize).min(s.len() - 2);
                s[i] + (s[i + 1] - s[i]) * (at - i as f64)
            }
        }
    }

    /// The mean in ms, or `None` when it is infinite (a Pareto part with
    /// `alpha <= 1`).
    pub fn mean(&self) -> Option<f64> {
        match &self.0 {
            Kind::Const(v) => Some(*v),
            Kind::Uniform { lo, hi } => Some((lo + hi) / 2.0),
            Kind::Exp { mean } => Some(*mean),
            Kind::Pareto { xm, alpha } => (*alpha > 1.0).then(|| alpha * xm / (alpha - 1.0)),
            Kind::Mix(m) => {
                let sum: f64 = m.parts.iter().map(|(w, _)| w).sum();
                m.parts
                    .iter()
                    .map(|(w, d)| d.mean().map(|x| w / sum * x))
                    .sum()
            }
            Kind::Empirical(e) => {
                let s = &e.sorted;
                if s.len() == 1 {
                    return Some(s[0]);
                }
                // Linear interpolation gives each gap between neighbours
                // the same probability, and a gap's mean is its midpoint.
                let gaps = (s.len() - 1) as f64;
                Some(s.windows(2).map(|p| (p[0] + p[1]) / 2.0).sum::<f64>() / gaps)
            }
        }
    }

    /// The same distribution with every `empirical:FILE` turned into its
    /// inline samples (`empirical:[…]`): what to send to a node, which
    /// reads no files.
    pub fn inlined(&self) -> Dist {
        match &self.0 {
            Kind::Empirical(e) if e.file.is_some() => Dist(Kind::Empirical(Empirical {
                sorted: e.sorted.clone(),
                file: None,
            })),
            Kind::Mix(m) => {
                Dist::mix_unchecked(m.parts.iter().map(|(w, d)| (*w, d.inlined())).collect())
            }
            _ => self.clone(),
        }
    }

    /// Whether this is an empirical distribution read from a file.
    pub fn file(&self) -> Option<&str> {
        match &self.0 {
            Kind::Empirical(e) => e.file.as_deref(),
            Kind::Mix(m) => m.parts.iter().find_map(|(_, d)| d.file()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn draws(d: &Dist, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn a_constant_always_samples_its_value() {
        let d = Dist::constant(2.5).expect("valid");
        assert!(draws(&d, 1000, 1).iter().all(|&x| x == 2.5));
        assert_eq!(d.mean(), Some(2.5));
    }

    #[test]
    fn sample_means_match_the_distribution_means() {
        // Tolerances are about 5 standard errors of the sample mean of
        // 200 000 draws (for the Pareto, alpha = 3: finite variance).
        let cases = [
            (Dist::uniform(2.0, 6.0), 4.0, 0.02),
            (Dist::exp(0.6024), 0.6024, 0.007),
            (Dist::exp_rate(0.183), 1.0 / 0.183, 0.07),
            (Dist::pareto(1.5, 3.0), 2.25, 0.03),
            (
                Dist::mixture(vec![
                    (0.9, Dist::constant(1.0).expect("valid")),
                    (0.1, Dist::exp(10.0).expect("valid")),
                ]),
                1.9,
                0.04,
            ),
            (Dist::empirical(vec![0.0, 1.0, 4.0]), 1.5, 0.02),
        ];
        for (d, want, tol) in cases {
            let d = d.expect("valid");
            assert!((d.mean().expect("finite") - want).abs() < 1e-9, "{d}");
            let got = mean(&draws(&d, 200_000, 7));
            assert!(
                (got - want).abs() < tol,
                "{d}: sample mean {got}, want {want}"
            );
        }
    }

    #[test]
    fn a_pareto_never_samples_below_its_scale_and_has_the_stated_tail() {
        let d = Dist::pareto(0.235, 10.0).expect("valid");
        let v = draws(&d, 100_000, 3);
        assert!(v.iter().all(|&x| x >= 0.235));
        // P(X > 2 x_m) = 2^-10.
        let above = v.iter().filter(|&&x| x > 0.47).count() as f64 / v.len() as f64;
        assert!((above - 2f64.powi(-10)).abs() < 0.0005, "{above}");
        assert_eq!(Dist::pareto(1.0, 1.0).expect("valid").mean(), None);
    }

    #[test]
    fn a_mixture_draws_each_part_in_proportion_to_its_weight() {
        let d = Dist::mixture(vec![
            (0.25, Dist::constant(1.0).expect("valid")),
            (0.75, Dist::constant(2.0).expect("valid")),
        ])
        .expect("valid");
        let v = draws(&d, 100_000, 5);
        let ones = v.iter().filter(|&&x| x == 1.0).count() as f64 / v.len() as f64;
        assert!((ones - 0.25).abs() < 0.007, "{ones}");
        assert!(v.iter().all(|&x| x == 1.0 || x == 2.0));
    }

    #[test]
    fn an_empirical_distribution_interpolates_within_its_samples() {
        let d = Dist::empirical(vec![5.0, 1.0, 3.0]).expect("valid");
        let v = draws(&d, 10_000, 9);
        assert!(v.iter().all(|&x| (1.0..=5.0).contains(&x)));
        let below_3 = v.iter().filter(|&&x| x < 3.0).count() as f64 / v.len() as f64;
        assert!((below_3 - 0.5).abs() < 0.03, "{below_3}");
        assert_eq!(Dist::empirical(vec![4.0]).expect("valid").mean(), Some(4.0));
    }

    proptest::proptest! {
        /// Each kind stays within its support: uniform within its bounds,
        /// a Pareto at or above its scale, an empirical distribution
        /// between its smallest and largest sample.
        #[test]
        fn samples_stay_within_the_support(
            a in 0.0..1e4f64,
            b in 0.0..1e4f64,
            alpha in 0.1..20.0f64,
            v in proptest::collection::vec(0.0..1e4f64, 1..10),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            let u = Dist::uniform(lo, hi).expect("valid");
            let p = Dist::pareto(lo + 1e-3, alpha).expect("valid");
            let e = Dist::empirical(v.clone()).expect("valid");
            let (min, max) = v.iter().fold((f64::MAX, 0.0f64), |(m, x), &s| (m.min(s), x.max(s)));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..100 {
                let x = u.sample(&mut rng);
                proptest::prop_assert!((lo..=hi).contains(&x), "uniform {} {}", u, x);
                proptest::prop_assert!(p.sample(&mut rng) >= lo + 1e-3);
                let y = e.sample(&mut rng);
                proptest::prop_assert!((min..=max).contains(&y), "{} {}", e, y);
            }
        }
    }

    #[test]
    fn constructors_refuse_what_cannot_be_a_delay() {
        let bad = [
            Dist::constant(-1.0),
            Dist::constant(f64::NAN),
            Dist::uniform(3.0, 2.0),
            Dist::uniform(-1.0, 2.0),
            Dist::exp(0.0),
            Dist::exp_rate(-2.0),
            Dist::pareto(0.0, 1.0),
            Dist::pareto(1.0, f64::INFINITY),
            Dist::empirical(vec![]),
            Dist::empirical(vec![1.0, -0.5]),
            Dist::mixture(vec![]),
            Dist::mixture(vec![(0.5, Dist::constant(1.0).expect("valid"))]),
        ];
        for (i, r) in bad.into_iter().enumerate() {
            assert!(r.is_err(), "case {i} accepted: {r:?}");
        }
    }
}
