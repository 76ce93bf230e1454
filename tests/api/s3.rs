//! A real S3-protocol server for the BYOS tests: `s3s-fs` (crates.io), started on loopback
//! with its signature checking on, so that wrong credentials really fail. `.ci/run`
//! installs it; elsewhere the tests that need it say they were skipped when it is missing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIADGIDGITESTKEY01";
pub const SECRET_KEY: &str = "dgidgi-test-secret-4b1d2f9c0e7a";

pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    /// The folder the server keeps buckets in (one sub-folder per bucket).
    pub root: tempfile::TempDir,
}

/// Where `s3s-fs` is: `S3S_FS`, the tools folder `.ci/run` installs into, or `PATH`.
fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("S3S_FS") {
        return Some(PathBuf::from(path));
    }
    let tools = std::env::var_os("DGIDGI_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/dgidgi-tools")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut candidates = tools
        .map(|t| t.join("bin/s3s-fs"))
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join("s3s-fs")));
    candidates.find(|p| p.is_file())
}

impl S3Server {
    /// Starts the server with `buckets` created; `None` (skipped) when it is not installed,
    /// a failure under CI.
    pub fn start(buckets: &[&str]) -> Option<Self> {
        let Some(bin) = binary() else {
            let how = "cargo install --locked --root ~/.cache/dgidgi-tools s3s-fs@0.14.1 --features binary";
            assert!(
                std::env::var_os("CI").is_none(),
                "s3s-fs is required under CI; install it with: {how}"
            );
            eprintln!("skipped: s3s-fs is not installed ({how})");
            return None;
        };
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        }
        let log_path = root.path().join("s3s-fs.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("s3s-fs starts");
        let mut server = Self {
            child,
            endpoint: String::new(),
            root,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.endpoint.is_empty() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not say where it listens"
            );
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(at) = text.find("server is running at http://127.0.0.1:") {
                let rest = &text[at + "server is running at ".len()..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || c == '\u{1b}')
                    .unwrap_or(rest.len());
                server.endpoint = rest[..end].to_string();
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(server)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
