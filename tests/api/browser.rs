//! A real browser as a client: headless Chromium opens an `EventSource` on a chat session
//! (authenticated with a token in the query string) and receives a whole reply; and it
//! drives the operations dashboard (over the DevTools protocol) while a run works.
//!
//! The page is served by this test on another port, which also forwards `/api/` to the
//! server, so page and API share an origin, as with the SDK's `baseURL: '/api/v1'`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web::{Bytes, Data};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::Backend;

#[derive(Default)]
struct Seen {
    opened: bool,
    done: Option<String>,
}

struct Page {
    html: String,
    api: String,
    seen: Mutex<Seen>,
}

async fn page(state: Data<Arc<Page>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html")
        .body(state.html.clone())
}

async fn report(state: Data<Arc<Page>>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let mut seen = state.seen.lock().unwrap();
    match req.path() {
        "/opened" => seen.opened = true,
        _ => seen.done = Some(String::from_utf8_lossy(&body).into_owned()),
    }
    HttpResponse::NoContent().finish()
}

/// Forwards a GET under `/api/` to the API server, streaming the answer back.
async fn forward(state: Data<Arc<Page>>, req: HttpRequest) -> HttpResponse {
    let url = format!("{}{}?{}", state.api, req.path(), req.query_string());
    let mut upstream = reqwest::Client::new().get(url).send().await.unwrap();
    let mut res = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(upstream.status().as_u16()).unwrap(),
    );
    if let Some(kind) = upstream.headers().get("content-type") {
        res.content_type(kind.to_str().unwrap());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, actix_web::Error>>(16);
    actix_web::rt::spawn(async move {
        while let Ok(Some(chunk)) = upstream.chunk().await {
            if tx.send(Ok(Bytes::from(chunk.to_vec()))).await.is_err() {
                break;
            }
        }
    });
    res.streaming(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[actix_web::test]
async fn chromium_receives_a_whole_reply_through_an_event_source() {
    let Some(chromium) = chromium() else {
        return;
    };
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "web").await;
    let session = ctx
        .post(
            "/api/v1/chat/sessions",
            &tenant.key,
            json!({ "projectId": project }),
        )
        .await;
    let session = session.data()["id"].as_str().unwrap().to_string();
    let token = ctx.token(&tenant.key).await;
    let token = token.data()["access_token"].as_str().unwrap().to_string();

    let html = format!(
        r#"<!doctype html><html><body><pre id="out"></pre><script>
let text = '';
const source = new EventSource('/api/v1/chat/sessions/{session}/stream?access_token={token}');
source.onopen = () => fetch('/opened', {{ method: 'POST' }});
source.addEventListener('token', e => {{ text += JSON.parse(e.data).delta; document.getElementById('out').textContent = text; }});
source.addEventListener('reply.completed', e => {{
  source.close();
  fetch('/done', {{ method: 'POST', body: text + '|' + JSON.parse(e.data).message.content + '|' + e.lastEventId }});
}});
</script></body></html>"#
    );
    let state = Arc::new(Page {
        html,
        api: ctx.address.clone(),
        seen: Mutex::new(Seen::default()),
    });
    let shared = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(Data::new(shared.clone()))
            .route("/", web::get().to(page))
            .route("/opened", web::post().to(report))
            .route("/done", web::post().to(report))
            .route("/api/{tail:.*}", web::get().to(forward))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let page_url = format!("http://{}/", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let profile = tempfile::tempdir().unwrap();
    let mut browser = std::process::Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&page_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let wait_for = |what: fn(&Seen) -> bool| {
        let state = state.clone();
        async move {
            for _ in 0..1500 {
                if what(&state.seen.lock().unwrap()) {
                    return true;
                }
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    let opened = wait_for(|s| s.opened).await;
    if opened {
        ctx.llm.push(Script::Slow(
            vec!["Hello ", "from ", "the ", "server"],
            Duration::from_millis(20),
        ));
        let res = ctx
            .post(
                &format!("/api/v1/chat/sessions/{session}/messages"),
                &tenant.key,
                json!({ "content": "hi" }),
            )
            .await;
        assert_eq!(res.status, 202);
    }
    let done = opened && wait_for(|s| s.done.is_some()).await;
    let _ = browser.kill();
    let _ = browser.wait();
    handle.stop(false).await;
    assert!(opened, "the page's EventSource opened");
    assert!(done, "the page saw reply.completed");
    let report = state.seen.lock().unwrap().done.clone().unwrap();
    let parts: Vec<&str> = report.split('|').collect();
    assert_eq!(parts[0], "Hello from the server", "the tokens, in order");
    assert_eq!(parts[1], "Hello from the server", "the completed message");
    assert!(
        parts[2].parse::<i64>().unwrap() > 4,
        "lastEventId is the event's seq: {report}"
    );
    ctx.stop().await;
}

/// Drives a page of headless Chromium over the DevTools protocol.
struct Devtools {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Devtools {
    /// Opens `url` in a new headless Chromium and attaches to its page.
    async fn open(
        chromium: &str,
        url: &str,
        profile: &std::path::Path,
    ) -> (std::process::Child, Self) {
        use std::io::BufRead;
        let mut browser = std::process::Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(browser.stderr.take().unwrap());
        let port = loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "chromium exited");
            if let Some(rest) = line
                .trim()
                .strip_prefix("DevTools listening on ws://127.0.0.1:")
            {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let mut page = None;
        for _ in 0..100 {
            let targets: serde_json::Value =
                reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
            page = targets
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string));
            if page.is_some() {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let (socket, _) = tokio_tungstenite::connect_async(page.expect("a page target"))
            .await
            .unwrap();
        (browser, Self { socket, next: 0 })
    }

    async fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        self.next += 1;
        let id = self.next;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
        while let Some(message) = self.socket.next().await {
            if let Ok(Message::Text(text)) = message {
                let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
                if answer["id"] == id {
                    assert!(answer["error"].is_null(), "{method}: {answer}");
                    return answer["result"].clone();
                }
            }
        }
        panic!("devtools connection closed");
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits (up to 10 s) until `expression` is true.
    async fn until(&mut self, expression: &str) -> bool {
        for _ in 0..200 {
            if self.eval(expression).await == json!(true) {
                return true;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required under CI (.ci/run installs it)"
        );
        eprintln!("skipped: no chromium on this machine");
    }
    found
}

#[actix_web::test]
async fn the_ops_dashboard_shows_a_run_started_through_the_api() {
    let Some(chromium) = chromium() else {
        return;
    };
    let ctx = LlmApp::start(Backend::Sqlite).await.unwrap();
    let profile = tempfile::tempdir().unwrap();
    let (mut browser, mut page) =
        Devtools::open(chromium, &format!("{}/ops", ctx.address), profile.path()).await;
    assert!(
        page.until("!!document.getElementById('key')").await,
        "the page loaded"
    );
    let key = serde_json::to_string(&ctx.operator_key).unwrap();
    page.eval(&format!(
        "document.getElementById('key').value = {key}; document.querySelector('#connect button').click(); true"
    ))
    .await;
    assert!(
        page.until("document.getElementById('status').textContent === 'live'")
            .await,
        "the dashboard connected: {}",
        page.eval("document.getElementById('status').textContent")
            .await
    );

    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "web").await;
    let agent = ctx.agent(&tenant.key, json!({ "name": "slow" })).await;
    ctx.llm
        .push(Script::Slow(vec!["tick "; 40], Duration::from_millis(50)));
    let res = ctx
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "count slowly", "projectId": project }),
        )
        .await;
    assert_eq!(res.status, 202, "{}", res.body);
    let run = res.data()["id"].as_str().unwrap().to_string();
    let shown = page
        .until(&format!(
            "!!document.querySelector('[data-actor-id=\"{run}\"]') && document.getElementById('tree').textContent.includes('running')"
        ))
        .await;
    assert!(
        shown,
        "the run appeared: {}",
        page.eval("document.getElementById('tree').textContent")
            .await
    );
    assert!(
        page.until("document.getElementById('tokens-total').textContent.includes('tokens')")
            .await
    );

    let shot = page
        .call("Page.captureScreenshot", json!({ "format": "png" }))
        .await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops-dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
    assert!(png.len() > 10_000, "a real picture");

    // The key was kept in the page's memory only.
    let stored = page
        .eval("localStorage.length + sessionStorage.length + document.cookie.length + location.href.indexOf('chy_')")
        .await;
    assert_eq!(
        stored,
        json!(-1),
        "nothing of the key outside the page's memory"
    );
    let _ = browser.kill();
    let _ = browser.wait();
    ctx.stop().await;
}
