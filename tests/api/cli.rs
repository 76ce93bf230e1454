//! The binary itself: configuration from the environment, the bootstrap key, graceful stop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_dgidgi");

pub fn dgidgi(db: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DGIDGI__DATABASE__URL", db)
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn bad_configuration_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/x.db", dir.path().display());
    for (key, value, named) in [
        ("DGIDGI__SERVER__PORT", "eighty", "server.port"),
        ("DGIDGI__SERVER__PROT", "80", "prot"),
        ("DGIDGI__DATABASE__URL", "mysql://nope", "database.url"),
        (
            "DGIDGI__RATE_LIMIT__WINDOW_SECS",
            "0",
            "rate_limit.window_secs",
        ),
    ] {
        let out = dgidgi(&db).env(key, value).arg("serve").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{key}={value}: {stderr}");
    }
    let out = dgidgi(&db)
        .env("DGIDGI_CONFIG", "/nonexistent/dgidgi.toml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DGIDGI_CONFIG"));
}

#[test]
fn admin_create_key_prints_an_operator_key_that_the_server_accepts_and_sigterm_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/data/dgidgi.db", dir.path().display());
    let out = dgidgi(&db)
        .args(["admin", "create-key", "--operator"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("chy_op_"), "{stdout}");

    // A config file sets the port to 0 (any free one); the environment still wins over it.
    let file = dir.path().join("dgidgi.toml");
    std::fs::write(&file, "[server]\nport = 0\nworkers = 1\n").unwrap();
    let mut server = dgidgi(&db)
        .env("DGIDGI_CONFIG", &file)
        .env("DGIDGI__AUTH__JWT_TTL_SECS", "120")
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let port = wait_for_port(stderr);
    let base = format!("http://127.0.0.1:{port}");
    let (status, body) = get(&format!("{base}/api/v1/tenants"), &key);
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&format!("{base}/api/v1/auth/token"), &key);
    assert_eq!(status, 405, "GET on the token route is a 405");
    // SQLite is one node: a second serve on the same file refuses to start, saying why.
    let second = dgidgi(&db)
        .env("DGIDGI__SERVER__PORT", "0")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(said.contains("another dgidgi process is serving"), "{said}");

    unsafe { libc_kill(server.id() as i32, 15) };
    let status = wait(&mut server, Duration::from_secs(20)).expect("the server stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    // This serve printed no key: the database already had one.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(!stdout.contains("chy_op_"), "{stdout}");
}

#[test]
fn the_first_serve_on_an_empty_database_prints_an_operator_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/new/folder/dgidgi.db", dir.path().display());
    for run in 0..2 {
        let mut server = dgidgi(&db)
            .env("DGIDGI__SERVER__PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = BufReader::new(server.stderr.take().unwrap());
        // The start-up line says where it serves, its database and its data.
        let mut serving = String::new();
        while !serving.contains("dgidgi serving") {
            serving.clear();
            assert!(log.read_line(&mut serving).unwrap() > 0, "no start-up line");
        }
        for part in [
            "url=http://127.0.0.1:",
            "database=sqlite://",
            "storage=",
            "key_file=",
        ] {
            assert!(serving.contains(part), "{part} missing: {serving}");
        }
        assert!(serving.contains("dgidgi.keys"), "{serving}");
        std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
        unsafe { libc_kill(server.id() as i32, 2) };
        let status =
            wait(&mut server, Duration::from_secs(20)).expect("the server stops on SIGINT");
        assert!(status.success());
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut server.stdout.take().unwrap(), &mut stdout).unwrap();
        let printed = stdout.lines().filter(|l| l.starts_with("chy_op_")).count();
        assert_eq!(printed, if run == 0 { 1 } else { 0 }, "run {run}: {stdout}");
    }
}

/// Reads the server's log until it names its port, then keeps draining it in the
/// background, as a supervisor would.
/// A server process whose stderr (its log) goes to a file the test reads afterwards.
pub struct Logged {
    pub child: std::process::Child,
    pub operator: String,
    pub base: String,
    pub log: std::path::PathBuf,
}

impl Logged {
    /// Starts `dgidgi <args>` on a fresh SQLite file in `dir` with `envs`; waits for its
    /// operator key (stdout) and its port (the log, pretty or JSON).
    pub fn start(dir: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let db = format!("sqlite://{}/dgidgi.db", dir.display());
        let log = dir.join("server.log");
        let mut child = dgidgi(&db)
            .args(args)
            .env("DGIDGI__SERVER__PORT", "0")
            .env("DGIDGI__STORAGE__PLATFORM_ROOT", dir.join("storage"))
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut operator = String::new();
        while !operator.starts_with("chy_op_") {
            operator.clear();
            assert!(out.read_line(&mut operator).unwrap() > 0, "no operator key");
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let found = text
                .find("port=")
                .map(|at| &text[at + 5..])
                .or_else(|| text.find("\"port\":").map(|at| &text[at + 7..]));
            if let Some(rest) = found {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(port) = digits.parse::<u16>() {
                    break port;
                }
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the server exited: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            operator: operator.trim().to_string(),
            base: format!("http://127.0.0.1:{port}/api/v1"),
            log,
        }
    }

    /// Stops the server (SIGTERM) and returns its log.
    pub fn stop(mut self) -> String {
        unsafe { libc_kill(self.child.id() as i32, 15) };
        wait(&mut self.child, Duration::from_secs(10));
        std::fs::read_to_string(&self.log).unwrap()
    }
}

pub fn wait_for_port(stderr: BufReader<std::process::ChildStderr>) -> u16 {
    wait_for_port_logging(stderr).0
}

/// The port the server logs it listens on, and (growing as the server writes it) the rest
/// of its log.
pub fn wait_for_port_logging(
    mut stderr: BufReader<std::process::ChildStderr>,
) -> (u16, std::sync::Arc<std::sync::Mutex<String>>) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the server exited before logging its port"
        );
        if let Some(at) = line.find("port=") {
            let port = line[at + 5..]
                .split_whitespace()
                .next()
                .and_then(|p| p.parse().ok());
            let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let kept = log.clone();
            std::thread::spawn(move || {
                let mut line = String::new();
                while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                    kept.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
            return (port.expect("a port number"), log);
        }
    }
}

pub fn wait(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

extern "C" {
    #[link_name = "kill"]
    pub fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A blocking GET, for these tests that run without an async runtime of their own.
fn get(url: &str, key: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = reqwest::Client::new()
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    })
}

#[test]
fn a_request_in_flight_when_sigterm_arrives_is_still_answered() {
    use std::io::{Read, Write};

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/dgidgi.db", dir.path().display());
    let mut server = dgidgi(&db)
        .env("DGIDGI__SERVER__PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = wait_for_port(BufReader::new(server.stderr.take().unwrap()));
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let key = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no key printed");
        if line.starts_with("chy_op_") {
            break line.trim().to_string();
        }
    };

    // Half a request is on the wire when the signal comes; the rest follows after it.
    let body = r#"{"name": "Late but answered"}"#;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "POST /api/v1/tenants HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    // The server has nothing to show that it read the half; give its worker a moment.
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc_kill(server.id() as i32, 15) };
    // Shutdown has begun once the listener is closed: new connections are refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener stays open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    conn.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("Late but answered"));

    let status =
        wait(&mut server, Duration::from_secs(20)).expect("the server stops after the request");
    assert!(status.success(), "{status:?}");
    // And it no longer accepts connections.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
