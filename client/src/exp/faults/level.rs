//! The consistency levels of a fault experiment (`--levels`): each level is
//! a bucket of its own, named after the level, so that the checker can
//! read the level back from the bucket's name (docs/EXPERIMENTS.md,
//! "Checking a history"). Pure: parsing, naming and the bucket properties.

use std::fmt;
use std::str::FromStr;

use crate::types::{BucketPropsUpdate, Conflicts, Consistency};

/// How a level's bucket treats replicas and conflicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Strict quorums, siblings kept.
    Strict,
    /// Sloppy quorums (fallback nodes count toward W), siblings kept.
    Sloppy,
    /// Strict quorums, last writer wins.
    Lww,
}

/// One `--levels` entry: `[sloppy:|lww:]r=R,w=W`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelSpec {
    pub mode: Mode,
    pub r: Consistency,
    pub w: Consistency,
}

/// Why a level is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("level `{level}`: {why}")]
    Bad { level: String, why: String },
}

fn bad(level: &str, why: impl Into<String>) -> LevelError {
    LevelError::Bad {
        level: level.to_string(),
        why: why.into(),
    }
}

impl FromStr for LevelSpec {
    type Err = LevelError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (mode, rest) = match text.split_once(':') {
            None => (Mode::Strict, text),
            Some(("sloppy", rest)) => (Mode::Sloppy, rest),
            Some(("lww", rest)) => (Mode::Lww, rest),
            Some((other, _)) => {
                return Err(bad(
                    text,
                    format!("`{other}:` is no mode (sloppy: or lww:)"),
                ));
            }
        };
        let (mut r, mut w) = (None, None);
        for part in rest.split(',') {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| bad(text, format!("`{part}` is not r=LEVEL or w=LEVEL")))?;
            let slot = match name {
                "r" => &mut r,
                "w" => &mut w,
                other => return Err(bad(text, format!("`{other}` is neither r nor w"))),
            };
            if slot.is_some() {
                return Err(bad(text, format!("{name} is given twice")));
            }
            let level: Consistency = value.parse().map_err(|e| bad(text, format!("{e}")))?;
            if level == Consistency::Any {
                return Err(bad(text, "`any` promises nothing about the replicas"));
            }
            *slot = Some(level);
        }
        match (r, w) {
            (Some(r), Some(w)) => Ok(LevelSpec { mode, r, w }),
            _ => Err(bad(text, "both r and w are needed, e.g. r=2,w=2")),
        }
    }
}

impl fmt::Display for LevelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mode {
            Mode::Strict => {}
            Mode::Sloppy => f.write_str("sloppy:")?,
            Mode::Lww => f.write_str("lww:")?,
        }
        write!(f, "r={},w={}", self.r, self.w)
    }
}

/// The replicas `level` waits for among `n`.
pub fn count(level: Consistency, n: u32) -> u32 {
    match level {
        Consistency::One => 1,
        Consistency::Two => 2,
        Consistency::Three => 3,
        Consistency::Quorum => n / 2 + 1,
        Consistency::All => n,
        Consistency::Any => 0,
        Consistency::N(k) => k,
    }
}

impl LevelSpec {
    /// `exp-` plus the level with `=` and `,` dropped and `:` turned into
    /// `-`: `sloppy:r=2,w=2` is `exp-sloppy-r2w2`.
    pub fn bucket(&self) -> String {
        let text: String = self
            .to_string()
            .chars()
            .filter(|c| *c != '=' && *c != ',')
            .map(|c| if c == ':' { '-' } else { c })
            .collect();
        format!("exp-{text}")
    }

    /// The replicas a read waits for among `n`.
    pub fn r_count(&self, n: u32) -> u32 {
        count(self.r, n)
    }

    /// The replicas a write waits for among `n`.
    pub fn w_count(&self, n: u32) -> u32 {
        count(self.w, n)
    }

    /// Refuses an r or w beyond `n` replicas.
    pub fn check(&self, n: u32) -> Result<(), LevelError> {
        for (name, c) in [("r", self.r_count(n)), ("w", self.w_count(n))] {
            if c == 0 || c > n {
                return Err(bad(
                    &self.to_string(),
                    format!("{name} asks for {c} of {n} replicas"),
                ));
            }
        }
        Ok(())
    }

    /// r + w > n, strict quorums and siblings: the setting the store
    /// promises no anomaly for (docs/CONSISTENCY.md).
    pub fn strict(&self, n: u32) -> bool {
        self.mode == Mode::Strict && self.r_count(n) + self.w_count(n) > n
    }

    /// The bucket's properties: `n` replicas, the level's r and w as its
    /// defaults, its conflict mode and quorum kind.
    pub fn props(&self, n: u32) -> BucketPropsUpdate {
        BucketPropsUpdate {
            n: Some(n),
            r: Some(self.r),
            w: Some(self.w),
            conflicts: Some(if self.mode == Mode::Lww {
                Conflicts::Lww
            } else {
                Conflicts::Siblings
            }),
            sloppy_quorum: Some(self.mode == Mode::Sloppy),
            ..BucketPropsUpdate::default()
        }
    }
}

/// A whitespace-separated `--levels` list; a level given twice is refused
/// (it would share a bucket).
pub fn parse_levels(text: &str) -> Result<Vec<LevelSpec>, LevelError> {
    let mut out: Vec<LevelSpec> = Vec::new();
    for word in text.split_whitespace() {
        let level: LevelSpec = word.parse()?;
        if out.iter().any(|l| l.bucket() == level.bucket()) {
            return Err(bad(word, "given twice"));
        }
        out.push(level);
    }
    if out.is_empty() {
        return Err(bad(text, "no level given"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_level_names_its_bucket_after_itself() {
        let cases = [
            ("r=2,w=2", "exp-r2w2"),
            ("r=1,w=1", "exp-r1w1"),
            ("r=1,w=3", "exp-r1w3"),
            ("sloppy:r=2,w=2", "exp-sloppy-r2w2"),
            ("lww:r=2,w=2", "exp-lww-r2w2"),
            ("r=2,w=quorum", "exp-r2wquorum"),
        ];
        for (text, bucket) in cases {
            let level: LevelSpec = text.parse().expect(text);
            assert_eq!(level.bucket(), bucket, "{text}");
            assert_eq!(level.to_string(), text);
        }
    }

    #[test]
    fn levels_are_read_in_either_order_and_counted_against_n() {
        let l: LevelSpec = "w=quorum,r=all".parse().expect("valid");
        assert_eq!((l.r_count(5), l.w_count(5)), (5, 3));
        assert_eq!(l.to_string(), "r=all,w=quorum");
        assert!(l.strict(3));
        assert!(!"r=1,w=1".parse::<LevelSpec>().expect("valid").strict(3));
        assert!(
            !"sloppy:r=2,w=2"
                .parse::<LevelSpec>()
                .expect("valid")
                .strict(3)
        );
        assert!(!"lww:r=2,w=2".parse::<LevelSpec>().expect("valid").strict(3));
        assert!(
            "r=1,w=4"
                .parse::<LevelSpec>()
                .expect("parses")
                .check(3)
                .is_err()
        );
        assert!(
            "r=1,w=3"
                .parse::<LevelSpec>()
                .expect("parses")
                .check(3)
                .is_ok()
        );
    }

    #[test]
    fn bad_levels_are_refused_naming_the_level() {
        for (text, why) in [
            ("r=2", "both r and w"),
            ("x:r=1,w=1", "no mode"),
            ("r=1,w=1,r=2", "twice"),
            ("r=1,q=2", "neither r nor w"),
            ("r=0,w=1", "not a consistency level"),
            ("r=1,w=any", "promises nothing"),
            ("r1w1", "is not r=LEVEL"),
        ] {
            let err = text.parse::<LevelSpec>().expect_err(text).to_string();
            assert!(err.starts_with(&format!("level `{text}`")), "{err}");
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(parse_levels("r=1,w=1 r=1,w=1").is_err());
        assert!(parse_levels("  ").is_err());
    }

    #[test]
    fn the_bucket_carries_the_level_as_its_properties() {
        let p = "sloppy:r=2,w=1"
            .parse::<LevelSpec>()
            .expect("valid")
            .props(5);
        assert_eq!(p.n, Some(5));
        assert_eq!(
            (p.r, p.w),
            (Some(Consistency::N(2)), Some(Consistency::N(1)))
        );
        assert_eq!(p.sloppy_quorum, Some(true));
        assert_eq!(p.conflicts, Some(Conflicts::Siblings));
        let p = "lww:r=1,w=1".parse::<LevelSpec>().expect("valid").props(3);
        assert_eq!(p.conflicts, Some(Conflicts::Lww));
        assert_eq!(p.sloppy_quorum, Some(false));
    }

    fn arb_level() -> impl Strategy<Value = LevelSpec> {
        let c = prop_oneof![
            Just(Consistency::One),
            Just(Consistency::Quorum),
            Just(Consistency::All),
            (1u32..9).prop_map(Consistency::N),
        ];
        let mode = prop_oneof![Just(Mode::Strict), Just(Mode::Sloppy), Just(Mode::Lww)];
        (mode, c.clone(), c).prop_map(|(mode, r, w)| LevelSpec { mode, r, w })
    }

    proptest! {
        #[test]
        fn a_level_reads_back_from_its_text_and_names_a_valid_bucket(l in arb_level()) {
            let back: LevelSpec = l.to_string().parse().expect("round trip");
            prop_assert_eq!(&back, &l);
            let b = l.bucket();
            prop_assert!(b.starts_with("exp-"));
            prop_assert!(b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{}", b);
        }
    }
}
