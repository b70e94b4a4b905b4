//! The report's renderings of a small prediction: JSON shapes, tables,
//! curves, the Markdown report and the files of `--out`.

use quorumkv_faults::{DelaySpec, Preset};

use super::super::predict::{Config, predict};
use super::*;

fn prediction(rs: &[usize]) -> Prediction {
    let cfg = Config {
        n: 3,
        rs: rs.to_vec(),
        ws: vec![1],
        delays: Preset::LnkdSsd.delays(),
        model: Model::Wars,
        ts: vec![0.0, 1.0],
        ps: vec![0.999],
        max_k: 3,
        trials: 5_000,
        seed: 3,
    };
    predict(&cfg, 1).expect("valid")
}

fn report(p: &Prediction) -> Report<'_> {
    Report {
        prediction: p,
        command: "qkv exp predict --n 3".into(),
        spec: Some(DelaySpec::Preset(Preset::LnkdSsd).to_string()),
    }
}

#[test]
fn one_pair_puts_its_figures_at_the_top_and_several_go_in_configs() {
    let one = prediction(&[1]);
    let v: serde_json::Value = serde_json::from_str(&report(&one).json()).expect("json");
    assert_eq!(
        (v["n"].as_u64(), v["r"].as_u64(), v["w"].as_u64()),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(v["model"], "wars");
    assert_eq!(v["delays"]["spec"], "lnkd-ssd");
    assert_eq!(v["t_visibility"][1]["t_ms"].as_f64(), Some(1.0));
    assert!(v["t_at"]["0.999"].as_f64().is_some());
    assert!(v["latency_ms"]["write"]["p999"].as_f64().is_some());
    assert_eq!(v["k_staleness"].as_array().map(Vec::len), Some(3));
    assert!(v.get("configs").is_none() && v.get("quorumkv").is_none());
    let two = prediction(&[1, 2]);
    let v: serde_json::Value = serde_json::from_str(&report(&two).json()).expect("json");
    assert_eq!(v["configs"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["configs"][1]["r"].as_u64(), Some(2));
    assert_eq!(v["r"], serde_json::json!([1, 2]));
}

#[test]
fn the_tables_hold_one_row_per_pair_and_the_repair_table_needs_r_above_one() {
    let one = prediction(&[1]);
    let t = report(&one).tables();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].header, ["R", "W", "t=0ms", "t=1ms", "t@99.9%"]);
    assert_eq!(t[0].rows.len(), 1);
    assert_eq!(t[2].rows.len(), 3, "k = 1..=3");
    let two = prediction(&[1, 2]);
    let t = report(&two).tables();
    assert!(t[1].title.starts_with("read repair"));
    assert_eq!(t[1].rows[0][2], "0", "R=1 never disagrees");
}

#[test]
fn the_curves_start_at_zero_and_never_fall() {
    let p = prediction(&[1]);
    let csv = report(&p).visibility_csv();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("r,w,t_ms,p_consistent"));
    let ps: Vec<f64> = lines
        .map(|l| {
            l.rsplit(',')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("p")
        })
        .collect();
    assert_eq!(ps.len(), 201);
    assert!(ps.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(ps.last(), Some(&1.0));
    let lat = report(&p).latency_csv();
    assert_eq!(
        lat.lines().filter(|l| l.starts_with("read,1,")).count(),
        levels().len()
    );
}

#[test]
fn the_report_names_the_command_seed_and_distributions_and_the_files_are_complete() {
    let p = prediction(&[1]);
    let r = report(&p);
    let md = r.markdown();
    assert!(md.contains("qkv exp predict --n 3"));
    assert!(md.contains("| seed | 3 |"));
    assert!(md.contains("mix:0.9122*pareto:0.235,10"));
    let names: Vec<&str> = r.files().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "summary.json",
            "t_visibility.csv",
            "latency.csv",
            "plot.svg",
            "report.md"
        ]
    );
    let svg = r.svg();
    assert!(svg.contains(">R=1 W=1</text>") && svg.contains(">write W=1</text>"));
}

#[test]
fn numbers_print_short() {
    assert_eq!(
        (ms(1.5), ms(0.0), ms(12.34567)),
        ("1.5".into(), "0".into(), "12.3457".into())
    );
    assert_eq!(percent(0.999), "99.9%");
    assert_eq!((prob(1.0), prob(0.0)), ("1".into(), "0".into()));
    assert_eq!(prob(0.5), "0.500000");
}
