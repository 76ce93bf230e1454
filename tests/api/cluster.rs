//! Several `dgidgi` processes on loopback ports sharing one fresh PostgreSQL database: a
//! run's events reach subscribers on every node; a run whose owner dies (kill -9) or
//! stops (SIGSTOP) past its lease is taken over and resumed, and the old owner cannot
//! write to it any more; a restarted node leaves live runs with their owner; cancels go
//! through any node.

use std::time::Duration;

use dgidgi_testkit::sse::{read_until, Frame, Frames};
use dgidgi_testkit::{until, FreshDatabase};
use serde_json::{json, Value};

use crate::cli::{libc_kill, wait};
use crate::fake_llm::{FakeLlm, Script};
use crate::helpers::fresh_postgres;
use crate::restart::{call, start, writer, Server};

/// Leases short enough for a test (a dead owner's runs move within about 4 s), the
/// secrets every node of a cluster shares, an hour-long rate window in which the starter
/// plan allows a key 7 requests, and webhooks sent fast to loopback receivers.
const CLUSTER: [(&str, &str); 9] = [
    ("DGIDGI__OUTBOUND__ALLOW_PRIVATE_TARGETS", "true"),
    ("DGIDGI__WEBHOOKS__POLL_MS", "50"),
    ("DGIDGI__WEBHOOKS__TIMEOUT_SECS", "1"),
    ("DGIDGI__RATE_LIMIT__WINDOW_SECS", "3600"),
    ("DGIDGI__PLANS__STARTER__RATE_LIMIT__PER_KEY", "7"),
    ("DGIDGI__CLUSTER__HEARTBEAT_SECS", "1"),
    ("DGIDGI__CLUSTER__LEASE_SECS", "3"),
    (
        "DGIDGI__AUTH__JWT_SECRET",
        "a-test-secret-shared-by-every-node-of-the-cluster",
    ),
    (
        "DGIDGI__SECRETS__KEY",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    ),
];

/// Three nodes on one fresh database, an operator's tenant with a project and an agent
/// that may write files.
struct Cluster {
    nodes: Vec<Server>,
    operator: String,
    llm: FakeLlm,
    key: String,
    project: String,
    agent: String,
    dir: tempfile::TempDir,
    db: FreshDatabase,
}

impl Cluster {
    async fn start() -> Option<Self> {
        let db = fresh_postgres("cluster").await?;
        let dir = tempfile::tempdir().unwrap();
        let llm = FakeLlm::start().await;
        let (first, operator) = start(&db.url, &llm, dir.path(), true, &CLUSTER);
        let operator = operator.unwrap();
        let (key, project, agent) = writer(&first.base, &operator).await;
        let mut nodes = vec![first];
        for _ in 0..2 {
            nodes.push(start(&db.url, &llm, dir.path(), false, &CLUSTER).0);
        }
        Some(Self {
            nodes,
            operator,
            llm,
            key,
            project,
            agent,
            dir,
            db,
        })
    }

    /// Starts a run of the agent through node `n`; its id.
    async fn execute(&self, n: usize, goal: &str) -> String {
        let run = call(
            reqwest::Method::POST,
            format!("{}/agents/{}/execute", self.nodes[n].base, self.agent),
            &self.key,
            Some(json!({ "goal": goal, "projectId": self.project })),
        )
        .await;
        run["id"].as_str().unwrap().to_string()
    }

    fn run_url(&self, n: usize, run: &str) -> String {
        format!("{}/agents/{}/runs/{run}", self.nodes[n].base, self.agent)
    }

    async fn run(&self, n: usize, run: &str) -> Value {
        call(reqwest::Method::GET, self.run_url(n, run), &self.key, None).await
    }

    /// The run as node `n` shows it once it has ended (at most `limit`).
    async fn ended(&self, n: usize, run: &str, limit: Duration) -> Value {
        until(limit, || async {
            let now = self.run(n, run).await;
            (now["status"] != "running" && now["status"] != "queued").then_some(now)
        })
        .await
        .unwrap_or_else(|| panic!("run {run} did not end"))
    }

    /// Opens the run's event stream on node `n` after event `last`.
    async fn subscribe(&self, n: usize, run: &str, last: i64) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}/stream", self.run_url(n, run)))
            .bearer_auth(&self.key)
            .header("Last-Event-ID", last.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Every event of the run as node `n` streams it, to its end.
    async fn events(&self, n: usize, run: &str) -> Vec<Frame> {
        let text = self.subscribe(n, run, 0).await.text().await.unwrap();
        Frames::parse_all(&text)
    }

    fn kill(&mut self, n: usize, signal: i32) {
        unsafe { libc_kill(self.nodes[n].child.id() as i32, signal) };
    }

    async fn stop(mut self) {
        for n in 0..self.nodes.len() {
            self.kill(n, 9);
            let _ = wait(&mut self.nodes[n].child, Duration::from_secs(10));
        }
        self.llm.stop().await;
        drop(self.dir);
        drop(self.db);
    }
}

/// Reads `res` until `done` holds for the frames so far (at most 15 s); the frames.
async fn frames_until(res: &mut reqwest::Response, done: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    let read = read_until(res, |_, frame| {
        frames.push(frame.clone());
        done(&frames)
    });
    let _ = tokio::time::timeout(Duration::from_secs(15), read).await;
    frames
}

fn ids(frames: &[Frame]) -> Vec<i64> {
    frames.iter().map(|f| f.id).collect()
}

fn count(frames: &[Frame], event: &str) -> usize {
    frames.iter().filter(|f| f.event == event).count()
}

#[actix_web::test]
async fn a_run_streams_through_any_node_and_survives_the_death_of_its_owner() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    // Started through A, followed live through C, token for token.
    let pieces = vec!["one ", "two ", "three ", "four ", "five ", "six"];
    c.llm
        .push(Script::Slow(pieces.clone(), Duration::from_millis(100)));
    let run = c.execute(0, "count").await;
    let mut live = c.subscribe(2, &run, 0).await;
    let frames = frames_until(&mut live, |f| {
        f.last().is_some_and(|f| f.event == "run.completed")
    })
    .await;
    assert_eq!(ids(&frames), (1..=frames.len() as i64).collect::<Vec<_>>());
    let text: String = frames
        .iter()
        .filter(|f| f.event == "token")
        .map(|f| f.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, pieces.concat());

    // A dies (kill -9) mid-run: B or C resumes it after its last finished step.
    c.llm.push(Script::Tools(vec![(
        "write_file",
        json!({ "path": "notes.md", "content": "step one" }),
    )]));
    c.llm.push(Script::Stall(vec!["half a thought"]));
    let run = c.execute(0, "write notes").await;
    let mut watching = c.subscribe(1, &run, 0).await;
    let before = frames_until(&mut watching, |f| {
        f.iter().any(|f| f.event == "token" && f.data["step"] == 1)
    })
    .await;
    drop(watching);
    c.kill(0, 9);
    wait(&mut c.nodes[0].child, Duration::from_secs(10)).expect("killed");
    c.llm.push(Script::Text(vec!["resumed ", "and done"]));
    let done = c.ended(1, &run, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], "resumed and done");
    assert_eq!(
        done["steps"].as_array().unwrap().len(),
        2,
        "step 0 was not run again"
    );
    // A subscriber that comes back to C after what it had misses and repeats nothing.
    let last = before.last().unwrap().id;
    let rest = frames_until(&mut c.subscribe(2, &run, last).await, |f| {
        f.last().is_some_and(|f| f.event == "run.completed")
    })
    .await;
    let all = [before, rest].concat();
    assert_eq!(ids(&all), (1..=all.len() as i64).collect::<Vec<_>>());
    assert_eq!(count(&all, "run.resumed"), 1);
    assert_eq!(count(&all, "run.started"), 1);
    c.stop().await;
}

#[actix_web::test]
async fn a_restarted_node_leaves_a_live_run_with_its_owner() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    c.llm
        .push(Script::Slow(vec!["tick "; 30], Duration::from_millis(100)));
    let run = c.execute(0, "tick").await;
    let mut live = c.subscribe(0, &run, 0).await;
    frames_until(&mut live, |f| count(f, "token") >= 3).await;
    drop(live);
    // B restarts while A drives the run: the new B does not take it.
    c.kill(1, 15);
    wait(&mut c.nodes[1].child, Duration::from_secs(10)).expect("B stopped");
    let (db, llm) = (c.db.url.clone(), &c.llm);
    c.nodes[1] = start(&db, llm, c.dir.path(), false, &CLUSTER).0;
    let done = c.ended(1, &run, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], "tick ".repeat(30));
    let frames = c.events(1, &run).await;
    assert_eq!(ids(&frames), (1..=frames.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        count(&frames, "run.resumed"),
        0,
        "nobody resumed a live run"
    );
    assert_eq!(count(&frames, "token"), 30);
    c.stop().await;
}

#[actix_web::test]
async fn an_owner_paused_past_its_lease_cannot_write_to_the_run_another_node_took() {
    let Some(mut c) = Cluster::start().await else {
        return;
    };
    c.llm
        .push(Script::Slow(vec!["slow "; 100], Duration::from_millis(100)));
    let run = c.execute(0, "take your time").await;
    let mut live = c.subscribe(1, &run, 0).await;
    frames_until(&mut live, |f| count(f, "token") >= 3).await;
    drop(live);
    // A stops (SIGSTOP) past its lease; B or C takes the run over and finishes it.
    c.llm.push(Script::Text(vec!["taken ", "over"]));
    c.kill(0, 19);
    let done = c.ended(1, &run, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"], "taken over");
    let settled = c.events(1, &run).await;
    // A goes on (SIGCONT) with its stream still coming: its writes are refused.
    c.kill(0, 18);
    let health = until(Duration::from_secs(5), || async {
        let res = reqwest::get(format!("{}/../../healthz", c.nodes[0].base)).await;
        res.ok().filter(|r| r.status().is_success())
    })
    .await;
    assert!(health.is_some(), "A serves again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = c.events(2, &run).await;
    assert_eq!(
        after, settled,
        "nothing written after the new owner ended the run"
    );
    assert_eq!(ids(&after), (1..=after.len() as i64).collect::<Vec<_>>());
    assert_eq!(count(&after, "run.resumed"), 1);
    let shown = c.run(0, &run).await;
    assert_eq!(shown["status"], "completed");
    assert_eq!(shown["output"], "taken over");
    // A's driver found its claim superseded and stopped: refused, not merely colliding.
    let refused = until(Duration::from_secs(5), || async {
        let log = c.nodes[0].log.lock().unwrap().clone();
        log.contains("run taken over by another node").then_some(())
    })
    .await;
    assert!(refused.is_some(), "A's driver was fenced off");
    c.stop().await;
}

#[actix_web::test]
async fn a_cancel_through_any_node_stops_the_run_where_it_is_driven() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    one_run_at_a_time(&c).await;
    c.llm
        .push(Script::Slow(vec!["busy "; 100], Duration::from_millis(50)));
    let running = c.execute(0, "keep busy").await;
    let mut live = c.subscribe(0, &running, 0).await;
    frames_until(&mut live, |f| count(f, "token") >= 2).await;
    drop(live);
    // Queued on A behind the first run; cancelled through C before it ever starts.
    let queued = c.execute(0, "wait your turn").await;
    let cancelled = call(
        reqwest::Method::POST,
        format!("{}/cancel", c.run_url(2, &queued)),
        &c.key,
        Some(json!({})),
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["started_at"].is_null());
    // The running one, driven by A, cancelled through B.
    let cancelled = call(
        reqwest::Method::POST,
        format!("{}/cancel", c.run_url(1, &running)),
        &c.key,
        Some(json!({})),
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let frames = c.events(2, &running).await;
    assert_eq!(frames.last().unwrap().event, "run.cancelled");
    assert!(count(&frames, "token") < 100);
    c.stop().await;
}

/// Lets the cluster's tenant run one run at a time.
async fn one_run_at_a_time(c: &Cluster) {
    let res = reqwest::Client::new()
        .patch(format!(
            "{}/tenants/{}/settings",
            c.nodes[0].base,
            tenant_of(c).await
        ))
        .bearer_auth(&c.key)
        .json(&json!({ "max_concurrent_runs": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The tenant of the cluster's key.
async fn tenant_of(c: &Cluster) -> String {
    let project = call(
        reqwest::Method::GET,
        format!("{}/projects/{}", c.nodes[0].base, c.project),
        &c.key,
        None,
    )
    .await;
    project["tenant_id"].as_str().unwrap().to_string()
}

/// `GET /projects` with `key` on each node in turn, `times` times: the statuses, and
/// whether every answer was counted in one rate window.
async fn round_robin(c: &Cluster, key: &str, times: usize) -> (Vec<u16>, bool) {
    let client = reqwest::Client::new();
    let (mut statuses, mut windows) = (Vec::new(), std::collections::BTreeSet::new());
    for i in 0..times {
        let res = client
            .get(format!("{}/projects", c.nodes[i % c.nodes.len()].base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if let Some(reset) = res.headers().get("x-ratelimit-reset") {
            windows.insert(reset.to_str().unwrap().to_string());
        }
    }
    (statuses, windows.len() == 1)
}

#[actix_web::test]
async fn rate_limits_and_revocations_hold_across_nodes() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let tenant = call(
        reqwest::Method::POST,
        format!("{}/tenants", c.nodes[0].base),
        &c.operator,
        Some(json!({ "name": "Limited", "plan": "starter" })),
    )
    .await;
    let key = tenant["api_key"]["key"].as_str().unwrap().to_string();
    // 7 requests per window for the key, counted together by the three nodes.
    let (statuses, one_window) = round_robin(&c, &key, 21).await;
    if one_window {
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            7,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            14,
            "{statuses:?}"
        );
    }

    // A key that B has just used (and cached) is revoked on A: B refuses it as soon as A's
    // announcement arrives (LISTEN/NOTIFY, asynchronous: well within two seconds).
    let made = call(
        reqwest::Method::POST,
        format!("{}/api-keys", c.nodes[0].base),
        &c.key,
        Some(json!({ "name": "short-lived", "type": "int" })),
    )
    .await;
    let (short, id) = (made["key"].as_str().unwrap(), made["id"].as_str().unwrap());
    let (statuses, _) = round_robin(&c, short, 3).await;
    assert_eq!(statuses, [200, 200, 200]);
    let revoked = reqwest::Client::new()
        .delete(format!("{}/api-keys/{id}", c.nodes[0].base))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    for node in &c.nodes[1..] {
        let refused = until(Duration::from_secs(2), || async {
            let res = reqwest::Client::new()
                .get(format!("{}/projects", node.base))
                .bearer_auth(short)
                .send()
                .await
                .unwrap();
            (res.status() == 401).then_some(())
        })
        .await;
        assert!(refused.is_some(), "a revoked key is refused on every node");
    }
    c.stop().await;
}

/// How many requests `got` has of each `webhook-id`.
fn by_webhook_id(got: &[crate::webhooks::Received]) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for request in got {
        let id = request.headers["webhook-id"].to_str().unwrap().to_string();
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

#[actix_web::test]
async fn three_nodes_deliver_each_webhook_once_and_lose_none_when_one_dies() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let receiver = crate::webhooks::Receiver::start().await;
    call(
        reqwest::Method::POST,
        format!("{}/webhooks", c.nodes[0].base),
        &c.key,
        Some(json!({ "url": receiver.url, "events": ["project.created"] })),
    )
    .await;
    let bases: Vec<String> = c.nodes.iter().map(|n| n.base.clone()).collect();
    let create = |n: usize, name: String| {
        let url = format!("{}/projects", bases[n]);
        let key = c.key.clone();
        async move {
            call(
                reqwest::Method::POST,
                url,
                &key,
                Some(json!({ "name": name })),
            )
            .await
        }
    };
    for i in 0..30 {
        create(i % 3, format!("p{i}")).await;
    }
    receiver.wait_for(|g| by_webhook_id(g).len() >= 30).await;
    // Three nodes poll the same deliveries every 50 ms: none is sent twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = by_webhook_id(&receiver.got());
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");

    // A dies; what happens next is delivered by B and C, all of it.
    unsafe { libc_kill(c.nodes[0].child.id() as i32, 9) };
    for i in 0..10 {
        create(1 + i % 2, format!("q{i}")).await;
    }
    receiver.wait_for(|g| by_webhook_id(g).len() >= 40).await;
    let seen = by_webhook_id(&receiver.got());
    assert_eq!(seen.len(), 40);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    receiver.stop().await;
    c.stop().await;
}

#[actix_web::test]
async fn a_session_posted_to_through_two_nodes_answers_in_order_and_streams_alike_on_both() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    let session = call(
        reqwest::Method::POST,
        format!("{}/chat/sessions", c.nodes[0].base),
        &c.key,
        Some(json!({ "projectId": c.project })),
    )
    .await;
    let session = session["id"].as_str().unwrap().to_string();
    let stream = |n: usize| {
        reqwest::Client::new()
            .get(format!(
                "{}/chat/sessions/{session}/stream",
                c.nodes[n].base
            ))
            .bearer_auth(&c.key)
            .header("Last-Event-ID", "0")
            .send()
    };
    let (mut on_a, mut on_b) = (stream(0).await.unwrap(), stream(1).await.unwrap());
    for _ in 0..6 {
        c.llm.push(Script::Slow(
            vec!["answer ", "to ", "it"],
            Duration::from_millis(30),
        ));
    }
    // Posted alternately through A and B while replies stream.
    let mut posted = Vec::new();
    for i in 0..6 {
        let message = call(
            reqwest::Method::POST,
            format!("{}/chat/sessions/{session}/messages", c.nodes[i % 2].base),
            &c.key,
            Some(json!({ "content": format!("question {i}") })),
        )
        .await;
        posted.push(message["message"]["id"].as_str().unwrap().to_string());
    }
    let replies = |f: &[Frame]| count(f, "reply.completed") >= 6;
    let a = frames_until(&mut on_a, replies).await;
    let b = frames_until(&mut on_b, replies).await;
    assert_eq!(
        count(&a, "reply.completed"),
        6,
        "{:?}",
        a.iter().map(|f| &f.event).collect::<Vec<_>>()
    );
    assert_eq!(a, b, "subscribers on A and on B see the same stream");
    assert_eq!(ids(&a), (1..=a.len() as i64).collect::<Vec<_>>());
    let asked: Vec<&str> = a
        .iter()
        .filter(|f| f.event == "message.created")
        .map(|f| f.data["message"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(asked, posted, "answered in the order they were posted");
    let answered: Vec<&str> = a
        .iter()
        .filter(|f| f.event == "reply.completed")
        .map(|f| f.data["message"]["in_reply_to"].as_str().unwrap())
        .collect();
    assert_eq!(answered, posted);
    c.stop().await;
}

#[actix_web::test]
async fn every_node_lists_the_live_nodes_and_the_runs_each_drives() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    c.llm
        .push(Script::Slow(vec!["busy "; 60], Duration::from_millis(50)));
    // The node that takes the run over is kept busy too, or the resumed run could end
    // between two looks at the list and never be seen moved.
    c.llm.push(Script::Slow(
        vec!["still busy "; 300],
        Duration::from_millis(50),
    ));
    let run = c.execute(0, "keep busy").await;
    let mut live = c.subscribe(0, &run, 0).await;
    frames_until(&mut live, |f| count(f, "token") >= 1).await;
    drop(live);
    let nodes = |n: usize| {
        let url = format!("{}/ops/actors", c.nodes[n].base);
        let operator = c.operator.clone();
        async move { call(reqwest::Method::GET, url, &operator, None).await["nodes"].clone() }
    };
    let seen = nodes(1).await;
    let seen = seen.as_array().unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|n| n["this"] == true).count(), 1);
    assert_eq!(
        seen.iter()
            .map(|n| n["runs"].as_i64().unwrap())
            .sum::<i64>(),
        1
    );
    let routing = call(
        reqwest::Method::GET,
        format!("{}/routing-info", c.nodes[2].base),
        &c.key,
        None,
    )
    .await;
    assert_eq!(routing["nodes"].as_array().unwrap().len(), 3, "{routing}");
    // A dies: once its heartbeat is older than a lease it is no longer listed, and the
    // run it drove is listed with the node that took it over.
    unsafe { libc_kill(c.nodes[0].child.id() as i32, 9) };
    let after = until(Duration::from_secs(15), || async {
        let now = nodes(1).await;
        let listed = now.as_array().unwrap().clone();
        let moved = listed
            .iter()
            .map(|n| n["runs"].as_i64().unwrap())
            .sum::<i64>()
            == 1;
        (listed.len() == 2 && moved).then_some(listed)
    })
    .await;
    assert!(after.is_some(), "A is gone from the list and its run moved");
    c.stop().await;
}

#[actix_web::test]
async fn a_tenants_run_slots_are_counted_across_nodes() {
    let Some(c) = Cluster::start().await else {
        return;
    };
    one_run_at_a_time(&c).await;
    for _ in 0..3 {
        c.llm
            .push(Script::Slow(vec!["step "; 8], Duration::from_millis(50)));
    }
    // One run through each node at once; the tenant may run one at a time.
    let runs = [
        c.execute(0, "first").await,
        c.execute(1, "second").await,
        c.execute(2, "third").await,
    ];
    let mut spans = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let done = c.ended(n, run, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "completed", "{done}");
        let at = |k: &str| done[k].as_str().unwrap().to_string();
        spans.push((at("started_at"), at("finished_at")));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two runs of the tenant overlapped: {spans:?}"
        );
    }
    c.stop().await;
}
