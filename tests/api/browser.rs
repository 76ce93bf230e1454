//! A real browser as a client: headless Chromium opens an `EventSource` on a chat session
//! (authenticated with a token in the query string) and receives a whole reply.
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
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(chromium) = chromium else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required under CI (.ci/run installs it)"
        );
        eprintln!("skipped: no chromium on this machine");
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
