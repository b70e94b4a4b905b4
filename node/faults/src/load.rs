//! The crate's only I/O: reading the samples of `empirical:FILE`, e.g. the
//! delays a live cluster measured, so that they can feed the model. The
//! format is parsed by the pure [`samples`]; [`dist`] and [`spec`] parse
//! like `FromStr` but read the files they name.

use std::path::Path;

use crate::Dist;
use crate::error::Error;
use crate::preset::DelaySpec;
use crate::syntax;

/// The numbers in a samples file: separated by commas, spaces or
/// newlines, `#` starting a comment to the end of its line.
pub fn samples(text: &str) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for token in line.split(|c: char| c == ',' || c.is_whitespace()) {
            if token.is_empty() {
                continue;
            }
            let v: f64 = token
                .parse()
                .map_err(|_| format!("line {}: `{token}` is not a number", n + 1))?;
            out.push(v);
        }
    }
    Ok(out)
}

fn read(path: &str) -> Result<Vec<f64>, Error> {
    let text = std::fs::read_to_string(Path::new(path)).map_err(|e| Error::Load {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    samples(&text).map_err(|reason| Error::Load {
        path: path.to_string(),
        reason,
    })
}

/// Parses a distribution, reading the samples of each `empirical:FILE`.
pub fn dist(s: &str) -> Result<Dist, Error> {
    syntax::parse(s, &mut |_, path| read(path))
}

/// Parses a `--delays` value, reading the samples of each `empirical:FILE`.
pub fn spec(s: &str) -> Result<DelaySpec, Error> {
    DelaySpec::parse_with(s, &mut |_, path| read(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_samples_file_may_mix_separators_and_comments() {
        assert_eq!(
            samples("# measured\n1.5, 2\n3 4 # tail\n\n5,").expect("valid"),
            vec![1.5, 2.0, 3.0, 4.0, 5.0]
        );
        let err = samples("1\n2 x").expect_err("not a number");
        assert_eq!(err, "line 2: `x` is not a number");
    }

    #[test]
    fn an_empirical_file_is_read_and_named_in_the_display() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lat.txt");
        std::fs::write(&path, "3\n1\n2\n").expect("write");
        let text = format!("empirical:{}", path.display());
        let d = dist(&text).expect("loads");
        assert_eq!(d.mean(), Some(2.0));
        assert_eq!(d.to_string(), text);
        assert_eq!(dist(&d.to_string()).expect("loads again"), d);
        assert_eq!(d.file(), Some(path.to_str().expect("utf-8")));
        let mix = dist(&format!("mix:0.5*{text}+0.5*const:1")).expect("loads");
        assert_eq!(mix.mean(), Some(1.5));
        // Inlined, the samples travel in the text, which parses without
        // reading the file.
        let inline = mix.inlined();
        assert_eq!(inline.file(), None);
        assert_eq!(inline.to_string(), "mix:0.5*empirical:[1,2,3]+0.5*const:1");
        assert_eq!(inline.to_string().parse::<Dist>().expect("parses"), inline);
        match spec(&text).expect("a distribution for every leg") {
            DelaySpec::Every(e) => assert_eq!(e, d),
            other => panic!("{other:?}"),
        }
        let missing = dist("empirical:/nonexistent/lat.txt").expect_err("no file");
        assert!(
            missing
                .to_string()
                .starts_with("empirical:/nonexistent/lat.txt: "),
            "{missing}"
        );
        std::fs::write(&path, "1 -2").expect("write");
        let negative = dist(&text).expect_err("negative sample").to_string();
        assert!(negative.contains("the sample must be >= 0"), "{negative}");
    }
}
