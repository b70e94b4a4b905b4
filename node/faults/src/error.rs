//! The crate's one error type: every message names the text at fault and
//! says what it should have been.

/// Why a distribution, preset or delay specification was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No `KIND:` prefix.
    #[error(
        "`{input}` is not a distribution: expected KIND:PARAMETERS with KIND one of const, uniform, exp, pareto, mix, empirical"
    )]
    Syntax {
        /// The text.
        input: String,
    },
    /// A `KIND:` that is not a distribution.
    #[error(
        "`{kind}` in `{input}` is not a kind of distribution (expected const, uniform, exp, pareto, mix or empirical)"
    )]
    UnknownKind {
        /// The distribution's text.
        input: String,
        /// The unknown kind.
        kind: String,
    },
    /// The parameters do not have the kind's shape.
    #[error("`{input}`: {kind} takes {expected}")]
    Params {
        /// The distribution's text.
        input: String,
        /// The kind.
        kind: &'static str,
        /// The shape it takes.
        expected: &'static str,
    },
    /// A parameter that is not a number.
    #[error("`{token}` in `{input}` is not a number (the {what})")]
    NotANumber {
        /// The distribution's text.
        input: String,
        /// The bad token.
        token: String,
        /// Which parameter it is.
        what: &'static str,
    },
    /// A number outside the parameter's range.
    #[error("`{token}` in `{input}`: the {what} must be {bound}")]
    OutOfRange {
        /// The distribution's text.
        input: String,
        /// The bad token.
        token: String,
        /// Which parameter it is.
        what: &'static str,
        /// Its range.
        bound: &'static str,
    },
    /// Mixture weights that do not sum to 1.
    #[error("`{input}`: the mixture's weights sum to {sum}, not 1 (within 1e-6)")]
    WeightsSum {
        /// The mixture's text.
        input: String,
        /// What they sum to.
        sum: f64,
    },
    /// A mixture inside a mixture.
    #[error("`{input}`: a mixture's part cannot be a mixture (list its parts in the outer one)")]
    NestedMix {
        /// The mixture's text.
        input: String,
    },
    /// An empirical distribution without samples.
    #[error("`{input}`: an empirical distribution needs at least one sample")]
    NoSamples {
        /// The distribution's text.
        input: String,
    },
    /// `empirical:FILE` given where no file may be read (`FromStr`).
    #[error(
        "`{input}` reads the file `{path}`: parse it with quorumkv_faults::load::dist (FromStr reads no files)"
    )]
    NeedsLoader {
        /// The distribution's text.
        input: String,
        /// The file.
        path: String,
    },
    /// A samples file that cannot be read or parsed.
    #[error("empirical:{path}: {reason}")]
    Load {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A preset name that does not exist.
    #[error(
        "`{name}` is neither a preset (lnkd-ssd, lnkd-disk, ymmr, wan) nor a distribution (KIND:PARAMETERS)"
    )]
    UnknownPreset {
        /// The name.
        name: String,
    },
    /// A preset parameter the preset does not have, or without `=`.
    #[error("`{param}` is not a parameter of the preset {preset} (it takes {known})")]
    UnknownParam {
        /// The preset.
        preset: &'static str,
        /// The parameter as given.
        param: String,
        /// The parameters it takes.
        known: &'static str,
    },
    /// A preset parameter with a bad value.
    #[error("`{value}` for {preset}'s {param}: must be {bound}")]
    ParamValue {
        /// The preset.
        preset: &'static str,
        /// The parameter.
        param: &'static str,
        /// The value as given.
        value: String,
        /// Its range.
        bound: &'static str,
    },
}
