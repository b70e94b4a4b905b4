//! The routing table against docs/openapi.yaml, and path matching.

use std::collections::BTreeSet;

use super::*;

const OPERATIONS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// (METHOD, path) of every operation docs/openapi.yaml documents.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(OPENAPI_YAML).expect("docs/openapi.yaml is YAML");
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item.keys().filter(|k| OPERATIONS.contains(&k.as_str())) {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

fn served() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(|m| (m.to_string(), r.pattern.to_string()))
        })
        .collect()
}

#[test]
fn every_route_served_is_documented_in_openapi_and_nothing_else_is() {
    let (doc, served) = (documented(), served());
    let undocumented: Vec<_> = served.difference(&doc).collect();
    let unserved: Vec<_> = doc.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but missing from docs/openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in docs/openapi.yaml but not served: {unserved:?}"
    );
}

#[test]
fn openapi_is_3_1_and_names_every_path_parameter() {
    let doc: serde_json::Value = serde_yaml_ng::from_str(OPENAPI_YAML).expect("YAML");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    for route in ROUTES {
        let item = &doc["paths"][route.pattern];
        for name in route
            .pattern
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            let params = item["parameters"].as_array().cloned().unwrap_or_default();
            let mut resolved = params.iter().map(|p| match p["$ref"].as_str() {
                Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap_or(p),
                None => p,
            });
            assert!(
                resolved.any(|p| p["name"] == name && p["in"] == "path"),
                "{}: path parameter {name} is not declared at the path level",
                route.pattern
            );
        }
    }
}

#[test]
fn each_pattern_finds_its_own_route_and_no_other() {
    for route in ROUTES {
        let path = route
            .pattern
            .split('/')
            .map(|s| if s.starts_with('{') { "x%2Fy" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let segments: Vec<&str> = path[1..].split('/').collect();
        let found = find(&segments).expect(route.pattern);
        assert_eq!(found.route.pattern, route.pattern);
        if route.pattern.contains('{') {
            assert_eq!(found.params[0], "x%2Fy");
        }
    }
}

#[test]
fn paths_that_only_resemble_a_route_find_none() {
    for path in [
        "",
        "kv",
        "kv/a/b",
        "health/",
        "buckets/b/keys",
        "buckets/b/keys/k/more",
        "cluster/locate",
        "internal/local/buckets/b/keys",
        "internal/nope",
    ] {
        let segments: Vec<&str> = path.split('/').collect();
        assert!(find(&segments).is_none(), "{path:?}");
    }
    assert_eq!(unrouted_label(&["internal", "nope"]), "internal");
    assert_eq!(unrouted_label(&["nope"]), "unknown");
}

#[test]
fn patterns_and_method_lists_are_unique() {
    let patterns: BTreeSet<_> = ROUTES.iter().map(|r| r.pattern).collect();
    assert_eq!(patterns.len(), ROUTES.len());
    for r in ROUTES {
        let methods: BTreeSet<_> = r.methods.iter().collect();
        assert_eq!(methods.len(), r.methods.len(), "{}", r.pattern);
    }
}
