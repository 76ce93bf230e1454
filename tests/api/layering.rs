//! The layering ARCHITECTURE.md states, checked on the source tree: what each layer may
//! name. A grep, kept as a test so that it cannot be forgotten.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, with its text.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    assert!(!out.is_empty(), "no sources under {dir}");
    out
}

/// The files under `dir` (but not under `except`) whose text contains any of `needles`.
fn naming(dir: &str, except: &[&str], needles: &[&str]) -> Vec<String> {
    sources(dir)
        .into_iter()
        .filter(|(path, _)| !except.iter().any(|e| path.starts_with(root().join(e))))
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n)))
        .map(|(path, _)| path.strip_prefix(root()).unwrap().display().to_string())
        .collect()
}

#[test]
fn only_the_store_has_sql_and_only_the_http_layer_describes_the_api() {
    let none: Vec<String> = Vec::new();
    assert_eq!(
        naming("src", &["src/store"], &["sqlx::"]),
        none,
        "SQL outside src/store"
    );
    assert_eq!(naming("src/store", &[], &["utoipa::", "actix_web::"]), none);
    assert_eq!(
        naming("src", &["src/http", "src/startup.rs"], &["utoipa"]),
        none,
        "API description outside src/http"
    );
    assert_eq!(
        naming("actors/src", &[], &["sqlx::", "utoipa::", "actix_web::"]),
        none,
        "the actor crate names the database or the web layer"
    );
    let manifest = std::fs::read_to_string(root().join("actors/Cargo.toml")).unwrap();
    for crate_name in ["sqlx", "utoipa", "actix-web"] {
        assert!(
            !manifest.contains(crate_name),
            "actors/Cargo.toml depends on {crate_name}"
        );
    }
}

#[test]
fn event_names_are_written_only_in_the_event_enums() {
    let names = [
        "\"agent.",
        "\"run.",
        "\"reply.",
        "\"message.created\"",
        "\"token\"",
    ];
    let mut found = naming("src", &[], &names);
    found.extend(naming("actors/src", &["actors/src/events.rs"], &names));
    found.retain(|f| !f.ends_with("tests.rs"));
    assert_eq!(found, Vec::<String>::new());
}
