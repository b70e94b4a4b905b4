//! docs/openapi.yaml as the process tests' oracle: every response a test
//! receives through [`crate::http::Api`] is checked against the document —
//! its status must be one the document lists for the route and method,
//! its media type one the document gives for that status, and a JSON body
//! must validate against the schema of that status (JSON Schema 2020-12,
//! the dialect of OpenAPI 3.1, with the `jsonschema` crate).
//!
//! A mismatch panics in the test that saw it, and is remembered: when the
//! test process exits, the mismatches (even those a test swallowed, e.g.
//! in a spawned task) are printed and the process exits non-zero. The
//! count of validated bodies is printed at exit too, so a run shows how
//! much of the contract its tests actually exercised.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once};

use serde_json::{Value, json};

/// The document, as the node serves it.
pub const OPENAPI_YAML: &str = include_str!("../../docs/openapi.yaml");

static VALIDATED: AtomicU64 = AtomicU64::new(0);
static CHECKED: AtomicU64 = AtomicU64::new(0);
static MISMATCHES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();

/// JSON bodies validated against a schema so far in this process.
pub fn validated() -> u64 {
    VALIDATED.load(Ordering::Relaxed)
}

/// Responses whose status and media type were checked so far.
pub fn checked() -> u64 {
    CHECKED.load(Ordering::Relaxed)
}

struct Doc {
    json: Value,
    /// `(path template, its segments)` of every documented path.
    paths: Vec<(String, Vec<String>)>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

static DOC: LazyLock<Doc> = LazyLock::new(|| {
    let json: Value = serde_yaml_ng::from_str(OPENAPI_YAML)
        .unwrap_or_else(|e| panic!("docs/openapi.yaml does not parse: {e}"));
    let paths = json["paths"]
        .as_object()
        .map(|p| {
            p.keys()
                .map(|k| (k.clone(), k[1..].split('/').map(String::from).collect()))
                .collect()
        })
        .unwrap_or_default();
    Doc {
        json,
        paths,
        validators: Mutex::new(HashMap::new()),
    }
});

/// What a response is checked against.
pub struct Exchange<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The request's path, percent-encoded, with its query.
    pub path: &'a str,
    /// Whether the request asked for JSON (`Accept: application/json`).
    pub accepts_json: bool,
    /// The response's status.
    pub status: u16,
    /// The response's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The response's `X-Trace`, if any.
    pub trace: Option<&'a str>,
    /// The response's body.
    pub body: &'a [u8],
}

/// Checks one response; panics (and remembers the mismatch for the exit
/// report) when the document does not describe it.
pub fn check(x: &Exchange<'_>) {
    AT_EXIT.call_once(|| {
        // SAFETY: `report` is an `extern "C" fn()` that only reads statics.
        unsafe {
            libc::atexit(report);
        }
    });
    // The console's files and data routes under /ui/ belong to its page,
    // not to the contract (docs/openapi.yaml, `/ui`); its own tests check
    // them.
    if x.path.starts_with("/ui/") {
        return;
    }
    CHECKED.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = check_inner(x) {
        let line = format!(
            "{} {} -> {}: {e}; body: {}",
            x.method,
            x.path,
            x.status,
            String::from_utf8_lossy(&x.body[..x.body.len().min(400)])
        );
        MISMATCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.clone());
        panic!("response does not match docs/openapi.yaml: {line}");
    }
}

extern "C" fn report() {
    let mismatches = MISMATCHES.lock().unwrap_or_else(|p| p.into_inner());
    eprintln!(
        "openapi: {} JSON bodies validated against docs/openapi.yaml ({} responses checked, {} mismatches)",
        validated(),
        checked(),
        mismatches.len()
    );
    if !mismatches.is_empty() {
        for m in mismatches.iter() {
            eprintln!("openapi mismatch: {m}");
        }
        // SAFETY: ends the process at once with a failing status, so a
        // mismatch a test swallowed still fails the run.
        unsafe { libc::_exit(101) };
    }
}

fn check_inner(x: &Exchange<'_>) -> Result<(), String> {
    let doc = &*DOC;
    let path = x.path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let template = doc.paths.iter().find(|(_, pattern)| {
        pattern.len() == segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(p, s)| p.starts_with('{') || p == s)
    });
    let method = x.method.to_ascii_lowercase();
    let operation = template.and_then(|(t, _)| doc.json["paths"][t].get(&method));
    let Some(operation) = operation else {
        // No route (404) or a method the route does not serve (405): the
        // contract's error body; authorisation and admission come first.
        let allowed: &[u16] = if template.is_some() {
            &[405, 401, 503]
        } else {
            &[404, 401, 503]
        };
        if !allowed.contains(&x.status) {
            return Err(format!(
                "no documented operation, and the status is not one of {allowed:?}"
            ));
        }
        return validate_json(x, "#/components/schemas/Error");
    };
    let op_pointer = format!(
        "/paths/{}/{method}",
        template.map_or("", |(t, _)| t.as_str()).replace('/', "~1")
    );
    let status = x.status.to_string();
    let Some(response) = operation["responses"].get(&status) else {
        return Err(format!(
            "status {status} is not documented for {op_pointer}"
        ));
    };
    let response = resolve(&doc.json, response);
    if let Some(trace) = x.trace {
        let events: Value = serde_json::from_str(trace)
            .map_err(|e| format!("X-Trace is not JSON ({e}): {trace}"))?;
        validate(
            &events,
            "#/components/schemas/TraceEventList",
            json!({"type": "array", "items": {"$ref": "#/components/schemas/TraceEvent"}}),
        )?;
    }
    if x.body.is_empty() || x.method == "HEAD" {
        return Ok(());
    }
    let content = response["content"].as_object();
    let Some(content) = content else {
        return Err(format!("a body, but {op_pointer} {status} documents none"));
    };
    let media = x
        .content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    let raw_value = content.contains_key("*/*");
    if media == "application/json" && content.contains_key("application/json") {
        // A key's 200 is the stored value itself unless JSON was asked for
        // (its stored Content-Type may be application/json too).
        if raw_value && !x.accepts_json {
            return Ok(());
        }
        let pointer = format!("#{op_pointer}/responses/{status}/content/application~1json/schema");
        let schema = content["application/json"]["schema"].clone();
        return validate_json_with(x, &pointer, schema);
    }
    if content.contains_key(media) || raw_value {
        return Ok(());
    }
    Err(format!(
        "media type {media:?} is not among {:?} documented for {op_pointer} {status}",
        content.keys().collect::<Vec<_>>()
    ))
}

/// A `$ref` to a component, followed (once: components here do not chain).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer).unwrap_or(v),
        None => v,
    }
}

fn validate_json(x: &Exchange<'_>, reference: &str) -> Result<(), String> {
    validate_json_with(x, reference, json!({"$ref": reference}))
}

fn validate_json_with(x: &Exchange<'_>, key: &str, schema: Value) -> Result<(), String> {
    let body: Value =
        serde_json::from_slice(x.body).map_err(|e| format!("body is not JSON: {e}"))?;
    validate(&body, key, schema)?;
    VALIDATED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Validates `value` against `schema`, whose `$ref`s point into the
/// document's components (the document's `components` ride along in the
/// root schema, so `#/components/...` resolves); compiled once per `key`.
fn validate(value: &Value, key: &str, schema: Value) -> Result<(), String> {
    let doc = &*DOC;
    let validator = {
        let mut cache = doc.validators.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some(v) => v.clone(),
            None => {
                let mut root = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "components": doc.json["components"].clone(),
                });
                root["allOf"] = json!([schema]);
                let v = Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft202012)
                        .build(&root)
                        .map_err(|e| format!("schema {key} does not compile: {e}"))?,
                );
                cache.insert(key.to_string(), v.clone());
                v
            }
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("schema {key}: {}", errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x<'a>(method: &'a str, path: &'a str, status: u16, body: &'a str) -> Exchange<'a> {
        Exchange {
            method,
            path,
            accepts_json: false,
            status,
            content_type: Some("application/json"),
            trace: None,
            body: body.as_bytes(),
        }
    }

    #[test]
    fn documented_bodies_pass_and_drifted_ones_do_not() {
        let ok = x("GET", "/health", 200, r#"{"status":"ok","node":"n1"}"#);
        assert_eq!(check_inner(&ok), Ok(()));
        let wrong = x("GET", "/health", 200, r#"{"status":"fine","node":"n1"}"#);
        assert!(check_inner(&wrong).is_err());
        let undocumented = x("GET", "/health", 418, "{}");
        assert!(check_inner(&undocumented).is_err());
        let unavailable = x(
            "PUT",
            "/kv/a%2Fb?w=all",
            503,
            r#"{"error":"unavailable","message":"m","required":3,"alive":2,"failed":[{"node":"n3","reason":"down"}]}"#,
        );
        assert_eq!(check_inner(&unavailable), Ok(()));
        let no_counts = x("PUT", "/kv/k", 504, r#"{"error":"timeout","message":"m"}"#);
        assert!(check_inner(&no_counts).is_err());
        let unknown = x(
            "GET",
            "/nope",
            404,
            r#"{"error":"not_found","message":"m"}"#,
        );
        assert_eq!(check_inner(&unknown), Ok(()));
        let method = x(
            "PATCH",
            "/kv/k",
            405,
            r#"{"error":"bad_request","message":"m"}"#,
        );
        assert_eq!(check_inner(&method), Ok(()));
    }

    #[test]
    fn a_stored_json_value_is_not_mistaken_for_the_json_listing() {
        let raw = x("GET", "/kv/k", 200, r#"{"any":"value"}"#);
        assert_eq!(check_inner(&raw), Ok(()));
        let asked = Exchange {
            accepts_json: true,
            ..x("GET", "/kv/k", 200, r#"{"any":"value"}"#)
        };
        assert!(check_inner(&asked).is_err());
    }
}
