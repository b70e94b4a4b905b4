//! The string form of a [`Dist`]: parsing (`FromStr`, and [`parse`] with a
//! file loader for `empirical:FILE`), printing (`Display`, which parses
//! back to an equal value) and serde as that string.
//!
//! ```text
//! const:MS                 always MS
//! uniform:A..B             uniform on [A, B]
//! exp:MEAN                 exponential of mean MEAN ms (rate 1/MEAN)
//! pareto:XM,ALPHA          P(X > x) = (XM/x)^ALPHA for x >= XM
//! mix:W*DIST+W*DIST...     DIST with probability W; weights sum to 1
//! empirical:[MS,MS,...]    the samples given, interpolated
//! empirical:FILE           the samples in FILE (numbers separated by
//!                          commas, spaces or newlines; # comments)
//! ```
//!
//! Times are milliseconds. A mixture's parts are split at `+` outside
//! brackets and not in a number's exponent (`1e+3`), so a file named in a
//! mixture must not contain `+`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::dist::{Dist, Kind, check};
use crate::error::Error;

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{}` of an f64 is the shortest text that parses back to the
        // same value, which is what makes the round trip exact.
        match &self.0 {
            Kind::Const(v) => write!(f, "const:{v}"),
            Kind::Uniform { lo, hi } => write!(f, "uniform:{lo}..{hi}"),
            Kind::Exp { mean } => write!(f, "exp:{mean}"),
            Kind::Pareto { xm, alpha } => write!(f, "pareto:{xm},{alpha}"),
            Kind::Mix(m) => {
                f.write_str("mix:")?;
                for (i, (w, d)) in m.parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    write!(f, "{w}*{d}")?;
                }
                Ok(())
            }
            Kind::Empirical(e) => match &e.file {
                Some(path) => write!(f, "empirical:{path}"),
                None => {
                    f.write_str("empirical:[")?;
                    for (i, v) in e.sorted.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{v}")?;
                    }
                    f.write_str("]")
                }
            },
        }
    }
}

impl FromStr for Dist {
    type Err = Error;

    /// Parses the string form; `empirical:FILE` is refused
    /// ([`Error::NeedsLoader`]) because this reads no files: use
    /// [`crate::load::dist`].
    fn from_str(s: &str) -> Result<Dist, Error> {
        parse(s, &mut |input, path| {
            Err(Error::NeedsLoader {
                input: input.to_string(),
                path: path.to_string(),
            })
        })
    }
}

/// What reads the samples of `empirical:FILE`: given the distribution's
/// text and the path, the samples.
pub(crate) type Loader<'a> = dyn FnMut(&str, &str) -> Result<Vec<f64>, Error> + 'a;

/// Parses the string form of a distribution, asking `load` for the
/// samples of every `empirical:FILE`.
pub(crate) fn parse(s: &str, load: &mut Loader<'_>) -> Result<Dist, Error> {
    parse_part(s.trim(), true, load)
}

fn number(input: &str, token: &str, what: &'static str) -> Result<f64, Error> {
    token.trim().parse::<f64>().map_err(|_| Error::NotANumber {
        input: input.to_string(),
        token: token.trim().to_string(),
        what,
    })
}

fn parse_part(s: &str, top: bool, load: &mut Loader<'_>) -> Result<Dist, Error> {
    let Some((kind, rest)) = s.split_once(':') else {
        return Err(Error::Syntax {
            input: s.to_string(),
        });
    };
    let rest = rest.trim();
    let params = |kind, expected| Error::Params {
        input: s.to_string(),
        kind,
        expected,
    };
    match kind.trim() {
        "const" => {
            let v = number(s, rest, "delay")?;
            check(v, v >= 0.0, s, rest, "delay", ">= 0")?;
            Ok(Dist(Kind::Const(v)))
        }
        "uniform" => {
            let (a, b) = rest
                .split_once("..")
                .ok_or_else(|| params("uniform", "A..B (ms), e.g. uniform:1..5"))?;
            let lo = number(s, a, "lower bound")?;
            let hi = number(s, b, "upper bound")?;
            check(lo, lo >= 0.0, s, a.trim(), "lower bound", ">= 0")?;
            check(
                hi,
                hi >= lo,
                s,
                b.trim(),
                "upper bound",
                ">= the lower bound",
            )?;
            Ok(Dist(Kind::Uniform { lo, hi }))
        }
        "exp" => {
            let mean = number(s, rest, "mean in ms")?;
            check(mean, mean > 0.0, s, rest, "mean in ms", "> 0")?;
            Ok(Dist(Kind::Exp { mean }))
        }
        "pareto" => {
            let (a, b) = rest.split_once(',').ok_or_else(|| {
                params(
                    "pareto",
                    "XM,ALPHA (scale in ms, shape), e.g. pareto:0.235,10",
                )
            })?;
            let xm = number(s, a, "scale x_m")?;
            let alpha = number(s, b, "shape alpha")?;
            check(xm, xm > 0.0, s, a.trim(), "scale x_m", "> 0")?;
            check(alpha, alpha > 0.0, s, b.trim(), "shape alpha", "> 0")?;
            Ok(Dist(Kind::Pareto { xm, alpha }))
        }
        "mix" => {
            if !top {
                return Err(Error::NestedMix {
                    input: s.to_string(),
                });
            }
            let mut parts = Vec::new();
            let mut tokens = Vec::new();
            for part in split_parts(rest) {
                let (w, d) = part.split_once('*').ok_or_else(|| {
                    params(
                        "mix",
                        "WEIGHT*DIST parts joined by +, e.g. mix:0.9*exp:1+0.1*const:50",
                    )
                })?;
                parts.push((number(s, w, "weight")?, parse_part(d.trim(), false, load)?));
                tokens.push(w.trim());
            }
            Dist::mixture_of(parts, s, Some(&tokens))
        }
        "empirical" => {
            if let Some(list) = rest.strip_prefix('[') {
                let list = list
                    .strip_suffix(']')
                    .ok_or_else(|| params("empirical", "[MS,MS,...] or a file path"))?;
                let samples = list
                    .split(',')
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| number(s, t, "sample"))
                    .collect::<Result<Vec<f64>, Error>>()?;
                Dist::empirical_from(samples, None, s)
            } else if rest.is_empty() {
                Err(params("empirical", "[MS,MS,...] or a file path"))
            } else {
                let samples = load(s, rest)?;
                Dist::empirical_from(samples, Some(rest.to_string()), s)
            }
        }
        other => Err(Error::UnknownKind {
            input: s.to_string(),
            kind: other.to_string(),
        }),
    }
}

/// Splits a mixture's parameters at its top-level `+`: not inside
/// brackets, not the sign of an exponent (`1e+3`).
fn split_parts(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut depth = 0i32;
    for i in 0..b.len() {
        match b[i] {
            b'[' => depth += 1,
            b']' => depth -= 1,
            b'+' if depth == 0 && !exponent_sign(b, i) => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn exponent_sign(b: &[u8], i: usize) -> bool {
    i >= 2 && matches!(b[i - 1], b'e' | b'E') && (b[i - 2].is_ascii_digit() || b[i - 2] == b'.')
}

impl Serialize for Dist {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dist, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn d(s: &str) -> Dist {
        s.parse().expect(s)
    }

    #[test]
    fn the_paper_s_mixture_parses_into_its_parts() {
        let m = d("mix:0.9122*pareto:0.235,10+0.0878*exp:0.6024");
        let want = Dist::mixture(vec![
            (0.9122, Dist::pareto(0.235, 10.0).expect("valid")),
            (0.0878, Dist::exp(0.6024).expect("valid")),
        ])
        .expect("valid");
        assert_eq!(m, want);
        assert_eq!(
            m.to_string(),
            "mix:0.9122*pareto:0.235,10+0.0878*exp:0.6024"
        );
        assert_eq!(
            d(" uniform: 1 .. 5 "),
            Dist::uniform(1.0, 5.0).expect("valid")
        );
        assert_eq!(
            d("mix:0.5*const:1e+2+0.5*empirical:[3, 1]").to_string(),
            "mix:0.5*const:100+0.5*empirical:[1,3]"
        );
    }

    #[test]
    fn bad_strings_say_which_token_is_wrong_and_why() {
        let cases: &[(&str, &str)] = &[
            (
                "fast",
                "`fast` is not a distribution: expected KIND:PARAMETERS",
            ),
            (
                "gauss:1,2",
                "`gauss` in `gauss:1,2` is not a kind of distribution",
            ),
            (
                "exp:abc",
                "`abc` in `exp:abc` is not a number (the mean in ms)",
            ),
            ("exp:0", "`0` in `exp:0`: the mean in ms must be > 0"),
            ("const:-3", "`-3` in `const:-3`: the delay must be >= 0"),
            ("const:inf", "`inf` in `const:inf`: the delay must be >= 0"),
            ("uniform:5", "`uniform:5`: uniform takes A..B"),
            (
                "uniform:5..2",
                "`2` in `uniform:5..2`: the upper bound must be >= the lower bound",
            ),
            ("pareto:1", "`pareto:1`: pareto takes XM,ALPHA"),
            (
                "pareto:0,2",
                "`0` in `pareto:0,2`: the scale x_m must be > 0",
            ),
            (
                "pareto:1,x",
                "`x` in `pareto:1,x` is not a number (the shape alpha)",
            ),
            (
                "mix:0.5*exp:1+0.4*exp:2",
                "the mixture's weights sum to 0.9, not 1",
            ),
            ("mix:0.5*exp:1+0.5exp:2", "mix takes WEIGHT*DIST parts"),
            (
                "mix:1.5*exp:1+-0.5*exp:2",
                "`-0.5` in `mix:1.5*exp:1+-0.5*exp:2`: the weight must be > 0",
            ),
            ("mix:1*mix:1*exp:1", "a mixture's part cannot be a mixture"),
            ("mix:1*exp:q", "`q` in `exp:q` is not a number"),
            (
                "empirical:[]",
                "an empirical distribution needs at least one sample",
            ),
            (
                "empirical:[1,-2]",
                "`-2` in `empirical:[1,-2]`: the sample must be >= 0",
            ),
            (
                "empirical:[1,2",
                "empirical takes [MS,MS,...] or a file path",
            ),
            ("empirical:lat.txt", "reads the file `lat.txt`"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Dist>().expect_err(input).to_string();
            assert!(err.contains(want), "{input}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn a_distribution_is_its_string_in_json() {
        let m = d("mix:0.25*uniform:1..2+0.75*exp:3");
        let json = serde_json::to_string(&m).expect("serialises");
        assert_eq!(json, "\"mix:0.25*uniform:1..2+0.75*exp:3\"");
        assert_eq!(serde_json::from_str::<Dist>(&json).expect("parses"), m);
        assert!(serde_json::from_str::<Dist>("\"exp:-1\"").is_err());
    }

    /// Any distribution that is not a mixture (non-negative finite
    /// parameters in the shapes the constructors accept).
    fn simple() -> impl Strategy<Value = Dist> {
        let ms = 0.0..1e6f64;
        let pos = 1e-9..1e6f64;
        prop_oneof![
            ms.clone().prop_map(|v| Dist::constant(v).expect("valid")),
            (ms.clone(), ms.clone())
                .prop_map(|(a, b)| Dist::uniform(a.min(b), a.max(b)).expect("valid")),
            pos.clone().prop_map(|m| Dist::exp(m).expect("valid")),
            (pos.clone(), pos).prop_map(|(x, a)| Dist::pareto(x, a).expect("valid")),
            proptest::collection::vec(ms, 1..20).prop_map(|v| Dist::empirical(v).expect("valid")),
        ]
    }

    fn any_dist() -> impl Strategy<Value = Dist> {
        prop_oneof![
            simple(),
            proptest::collection::vec((1e-3..1.0f64, simple()), 1..5).prop_map(|parts| {
                let total: f64 = parts.iter().map(|(w, _)| w).sum();
                Dist::mixture(parts.into_iter().map(|(w, d)| (w / total, d)).collect())
                    .expect("normalised weights")
            }),
        ]
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_distribution(dist in any_dist()) {
            let text = dist.to_string();
            let back: Dist = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, dist);
        }

        #[test]
        fn every_sample_is_a_finite_non_negative_delay(dist in any_dist(), seed in any::<u64>()) {
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..64 {
                let x = dist.sample(&mut rng);
                prop_assert!(x.is_finite() && x >= 0.0, "{} sampled {}", dist, x);
            }
        }
    }
}
