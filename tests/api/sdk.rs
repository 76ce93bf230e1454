//! The TypeScript SDK (`sdk/typescript`) checked and tested against this build's server:
//! `tsc --noEmit` (strict), then its vitest suite, which starts this `dgidgi` binary on
//! port 0 for each file (every namespace, pagination, errors and retries, token renewal,
//! streams cut and resumed, the React hooks in jsdom, a page in headless Chromium, the
//! packed package, and the drift check of its generated types against the served OpenAPI
//! document). Node packages are installed with `npm ci` when they are missing.

use std::path::Path;
use std::process::{Command, Output};

fn npm() -> Option<&'static str> {
    let found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "Node.js 20+ and npm are required under CI"
        );
        eprintln!("skipped: no npm on this machine");
        return None;
    }
    Some("npm")
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("DGIDGI_BIN", crate::cli::BIN)
        .env("FORCE_COLOR", "0")
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

fn check(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_typescript_sdk_type_checks_and_passes_its_tests_against_this_server() {
    let Some(npm) = npm() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/typescript");
    // Installed once (CI installs them first); `npm ci` again when the lock file changed.
    let installed = dir.join("node_modules/.package-lock.json");
    let stale = match (
        std::fs::metadata(&installed).and_then(|m| m.modified()),
        std::fs::metadata(dir.join("package-lock.json")).and_then(|m| m.modified()),
    ) {
        (Ok(installed), Ok(lock)) => installed < lock,
        _ => true,
    };
    if stale {
        check(
            "npm ci",
            run(
                &dir,
                npm,
                &["ci", "--no-audit", "--no-fund", "--prefer-offline"],
            ),
        );
    }
    check("tsc --noEmit", run(&dir, npm, &["run", "typecheck"]));
    check("the SDK's tests", run(&dir, npm, &["test"]));
}
