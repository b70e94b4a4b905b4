//! The four WARS legs, the PBS paper's production fits as named presets,
//! and [`DelaySpec`], what a `--delays` option holds.
//!
//! The presets are the paper's Table 3 fits, one-way delays in ms. The
//! paper gives its exponentials as a *rate* λ per ms; [`Dist`]'s `exp:`
//! takes the *mean*, so each becomes `exp:1/λ` (λ = 1.66 is
//! `exp:0.6024…`).
//!
//! | preset | W | A = R = S |
//! |---|---|---|
//! | `lnkd-ssd` | 91.22% Pareto(0.235, 10) + 8.78% Exp(λ 1.66) | as W |
//! | `lnkd-disk` | 38% Pareto(1.05, 1.51) + 62% Exp(λ 0.183) | as `lnkd-ssd` |
//! | `ymmr:alpha=α` | 93.9% Pareto(3, α) + 6.1% Exp(λ 0.0028) | 98.2% Pareto(1.5, 3.8) + 1.8% Exp(λ 0.0217) |
//! | `wan:remote_ms=D` | `lnkd-disk`, plus D (75) ms on every message to or from all replicas but one "local" one, chosen at random per operation | |
//!
//! `ymmr`'s write shape α is 3.35 in the paper's table but 3.5 in the
//! simulator its figures came from; the default, [`Preset::YMMR_ALPHA`],
//! is the one that reproduces the figures (docs/EXPERIMENTS.md compares
//! both).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::dist::{Dist, Kind};
use crate::error::Error;
use crate::syntax::{self, Loader};

/// The four one-way delays of the WARS model, each drawn independently
/// per replica and operation: a write request reaching a replica (`w`),
/// its acknowledgement back (`a`), a read request (`r`) and its response
/// (`s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Legs {
    /// Write request, coordinator to replica.
    pub w: Dist,
    /// Write acknowledgement, replica to coordinator.
    pub a: Dist,
    /// Read request, coordinator to replica.
    pub r: Dist,
    /// Read response, replica to coordinator.
    pub s: Dist,
}

impl Legs {
    /// The same distribution on all four legs.
    pub fn every(d: Dist) -> Legs {
        Legs {
            w: d.clone(),
            a: d.clone(),
            r: d.clone(),
            s: d,
        }
    }
}

/// A delay model: the four legs and, for a wide-area setup, the extra
/// delay of remote replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delays {
    /// The legs.
    pub legs: Legs,
    /// Added to every one-way message to or from a *remote* replica: all
    /// but one "local" replica, chosen at random for each operation (the
    /// `wan` preset). `None`: every replica is local.
    pub remote_ms: Option<f64>,
}

/// The PBS paper's production latency fits (its Table 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preset {
    /// LinkedIn's Voldemort on SSDs.
    LnkdSsd,
    /// LinkedIn's Voldemort on spinning disks: slower, heavier-tailed writes.
    LnkdDisk,
    /// Yammer's Riak, with the write Pareto's shape `alpha`.
    Ymmr {
        /// Shape of the write distribution's Pareto part.
        alpha: f64,
    },
    /// `lnkd-disk` across datacenters: `remote_ms` more on every message
    /// to or from a remote replica.
    Wan {
        /// The one-way delay between datacenters.
        remote_ms: f64,
    },
}

impl Preset {
    /// `ymmr`'s default write shape: the simulator's 3.5, which reproduces
    /// the paper's figures (docs/EXPERIMENTS.md).
    pub const YMMR_ALPHA: f64 = 3.5;
    /// `wan`'s default delay between datacenters, in ms.
    pub const WAN_REMOTE_MS: f64 = 75.0;

    /// The delays this preset stands for.
    pub fn delays(&self) -> Delays {
        let ssd = mix(0.9122, pareto(0.235, 10.0), 0.0878, exp_rate(1.66));
        let disk_w = mix(0.38, pareto(1.05, 1.51), 0.62, exp_rate(0.183));
        match *self {
            Preset::LnkdSsd => Delays {
                legs: Legs::every(ssd),
                remote_ms: None,
            },
            Preset::LnkdDisk => Delays {
                legs: Legs {
                    w: disk_w,
                    ..Legs::every(ssd)
                },
                remote_ms: None,
            },
            Preset::Ymmr { alpha } => {
                let ars = mix(0.982, pareto(1.5, 3.8), 0.018, exp_rate(0.0217));
                Delays {
                    legs: Legs {
                        w: mix(0.939, pareto(3.0, alpha), 0.061, exp_rate(0.0028)),
                        ..Legs::every(ars)
                    },
                    remote_ms: None,
                }
            }
            Preset::Wan { remote_ms } => Delays {
                remote_ms: Some(remote_ms),
                ..Preset::LnkdDisk.delays()
            },
        }
    }
}

// The presets' constants are valid by inspection (and by the tests), so
// they are built without the constructors' checks.
fn pareto(xm: f64, alpha: f64) -> Dist {
    Dist(Kind::Pareto { xm, alpha })
}

fn exp_rate(lambda: f64) -> Dist {
    Dist(Kind::Exp { mean: 1.0 / lambda })
}

fn mix(w1: f64, d1: Dist, w2: f64, d2: Dist) -> Dist {
    Dist::mix_unchecked(vec![(w1, d1), (w2, d2)])
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preset::LnkdSsd => f.write_str("lnkd-ssd"),
            Preset::LnkdDisk => f.write_str("lnkd-disk"),
            Preset::Ymmr { alpha } => write!(f, "ymmr:alpha={alpha}"),
            Preset::Wan { remote_ms } => write!(f, "wan:remote_ms={remote_ms}"),
        }
    }
}

impl FromStr for Preset {
    type Err = Error;

    /// `NAME` or `NAME:PARAM=VALUE,…`: `lnkd-ssd`, `lnkd-disk`,
    /// `ymmr[:alpha=A]`, `wan[:remote_ms=D]`.
    fn from_str(s: &str) -> Result<Preset, Error> {
        let s = s.trim();
        let (name, params) = s.split_once(':').unwrap_or((s, ""));
        let params = params.split(',').map(str::trim).filter(|p| !p.is_empty());
        let (mut preset, known) = match name.trim() {
            "lnkd-ssd" => (Preset::LnkdSsd, "no parameters"),
            "lnkd-disk" => (Preset::LnkdDisk, "no parameters"),
            "ymmr" => (
                Preset::Ymmr {
                    alpha: Preset::YMMR_ALPHA,
                },
                "alpha=A",
            ),
            "wan" => (
                Preset::Wan {
                    remote_ms: Preset::WAN_REMOTE_MS,
                },
                "remote_ms=D",
            ),
            _ => {
                return Err(Error::UnknownPreset {
                    name: name.to_string(),
                });
            }
        };
        let preset_name = preset.name();
        for p in params {
            let unknown = || Error::UnknownParam {
                preset: preset_name,
                param: p.to_string(),
                known,
            };
            let (key, value) = p.split_once('=').ok_or_else(unknown)?;
            let (key, value) = (key.trim(), value.trim());
            let bad = |param, bound| Error::ParamValue {
                preset: preset_name,
                param,
                value: value.to_string(),
                bound,
            };
            let v: Option<f64> = value.parse().ok().filter(|v: &f64| v.is_finite());
            match (&mut preset, key) {
                (Preset::Ymmr { alpha }, "alpha") => {
                    *alpha = v
                        .filter(|v| *v > 0.0)
                        .ok_or_else(|| bad("alpha", "a number > 0"))?;
                }
                (Preset::Wan { remote_ms }, "remote_ms") => {
                    *remote_ms = v
                        .filter(|v| *v >= 0.0)
                        .ok_or_else(|| bad("remote_ms", "a number of ms >= 0"))?;
                }
                _ => return Err(unknown()),
            }
        }
        Ok(preset)
    }
}

impl Preset {
    /// The preset's name without parameters.
    pub fn name(&self) -> &'static str {
        match self {
            Preset::LnkdSsd => "lnkd-ssd",
            Preset::LnkdDisk => "lnkd-disk",
            Preset::Ymmr { .. } => "ymmr",
            Preset::Wan { .. } => "wan",
        }
    }
}

/// What a `--delays` option holds: a preset, or one distribution for all
/// four legs. A text is a distribution when it starts with a
/// distribution's kind (`exp:…`), else a preset.
#[derive(Debug, Clone, PartialEq)]
pub enum DelaySpec {
    /// A named preset.
    Preset(Preset),
    /// The same distribution on every leg.
    Every(Dist),
}

const KINDS: [&str; 6] = ["const", "uniform", "exp", "pareto", "mix", "empirical"];

impl DelaySpec {
    /// The delays it stands for.
    pub fn delays(&self) -> Delays {
        match self {
            DelaySpec::Preset(p) => p.delays(),
            DelaySpec::Every(d) => Delays {
                legs: Legs::every(d.clone()),
                remote_ms: None,
            },
        }
    }

    pub(crate) fn parse_with(s: &str, load: &mut Loader<'_>) -> Result<DelaySpec, Error> {
        let is_dist = s
            .split_once(':')
            .is_some_and(|(kind, _)| KINDS.contains(&kind.trim()));
        if is_dist {
            syntax::parse(s, load).map(DelaySpec::Every)
        } else {
            s.parse().map(DelaySpec::Preset)
        }
    }
}

impl FromStr for DelaySpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<DelaySpec, Error> {
        DelaySpec::parse_with(s, &mut |input, path| {
            Err(Error::NeedsLoader {
                input: input.to_string(),
                path: path.to_string(),
            })
        })
    }
}

impl fmt::Display for DelaySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelaySpec::Preset(p) => p.fmt(f),
            DelaySpec::Every(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_with_their_parameters_and_print_back() {
        let cases = [
            ("lnkd-ssd", Preset::LnkdSsd, "lnkd-ssd"),
            ("lnkd-disk", Preset::LnkdDisk, "lnkd-disk"),
            (
                "ymmr",
                Preset::Ymmr {
                    alpha: Preset::YMMR_ALPHA,
                },
                "ymmr:alpha=3.5",
            ),
            (
                "ymmr:alpha=3.35",
                Preset::Ymmr { alpha: 3.35 },
                "ymmr:alpha=3.35",
            ),
            ("wan", Preset::Wan { remote_ms: 75.0 }, "wan:remote_ms=75"),
            (
                "wan: remote_ms = 20",
                Preset::Wan { remote_ms: 20.0 },
                "wan:remote_ms=20",
            ),
        ];
        for (text, want, shown) in cases {
            let p: Preset = text.parse().expect(text);
            assert_eq!(p, want, "{text}");
            assert_eq!(p.to_string(), shown);
            assert_eq!(shown.parse::<Preset>().expect(shown), p);
        }
    }

    #[test]
    fn unknown_presets_and_parameters_are_named_in_the_error() {
        let cases = [
            (
                "lnkd",
                "`lnkd` is neither a preset (lnkd-ssd, lnkd-disk, ymmr, wan)",
            ),
            (
                "ymmr:beta=2",
                "`beta=2` is not a parameter of the preset ymmr (it takes alpha=A)",
            ),
            (
                "ymmr:alpha",
                "`alpha` is not a parameter of the preset ymmr",
            ),
            (
                "ymmr:alpha=-1",
                "`-1` for ymmr's alpha: must be a number > 0",
            ),
            (
                "wan:remote_ms=x",
                "`x` for wan's remote_ms: must be a number of ms >= 0",
            ),
            (
                "lnkd-ssd:alpha=3",
                "not a parameter of the preset lnkd-ssd (it takes no parameters)",
            ),
        ];
        for (text, want) in cases {
            let err = text.parse::<Preset>().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn preset_legs_are_the_paper_s_fits_with_rates_turned_into_means() {
        let ssd = Preset::LnkdSsd.delays();
        assert_eq!(
            ssd.legs.w.to_string(),
            format!("mix:0.9122*pareto:0.235,10+0.0878*exp:{}", 1.0 / 1.66)
        );
        assert_eq!(ssd.legs, Legs::every(ssd.legs.w.clone()));
        let disk = Preset::LnkdDisk.delays();
        assert_eq!(disk.legs.a, ssd.legs.a);
        assert_ne!(disk.legs.w, ssd.legs.w);
        let disk_w_mean = 0.38 * (1.51 * 1.05 / 0.51) + 0.62 / 0.183;
        assert!((disk.legs.w.mean().expect("finite") - disk_w_mean).abs() < 1e-9);
        let y = Preset::Ymmr { alpha: 3.35 }.delays();
        assert!(
            y.legs.w.to_string().contains("pareto:3,3.35"),
            "{}",
            y.legs.w
        );
        assert!(
            y.legs
                .r
                .to_string()
                .starts_with("mix:0.982*pareto:1.5,3.8+0.018*exp:")
        );
        let wan = Preset::Wan { remote_ms: 75.0 }.delays();
        assert_eq!(wan.legs, disk.legs);
        assert_eq!(wan.remote_ms, Some(75.0));
        // Every preset leg prints as a distribution that parses back.
        for p in [
            Preset::LnkdSsd,
            Preset::LnkdDisk,
            Preset::Ymmr { alpha: 3.5 },
        ] {
            let l = p.delays().legs;
            for d in [l.w, l.a, l.r, l.s] {
                assert_eq!(d.to_string().parse::<Dist>().expect("parses"), d);
            }
        }
    }

    #[test]
    fn a_delay_spec_is_a_distribution_when_it_starts_with_a_kind() {
        let every: DelaySpec = "exp:2".parse().expect("a distribution");
        assert_eq!(
            every.delays().legs,
            Legs::every(Dist::exp(2.0).expect("valid"))
        );
        assert_eq!(every.to_string(), "exp:2");
        let preset: DelaySpec = "ymmr:alpha=3.35".parse().expect("a preset");
        assert_eq!(preset, DelaySpec::Preset(Preset::Ymmr { alpha: 3.35 }));
        let err = "exp:-2"
            .parse::<DelaySpec>()
            .expect_err("bad mean")
            .to_string();
        assert!(err.contains("the mean in ms must be > 0"), "{err}");
    }
}
