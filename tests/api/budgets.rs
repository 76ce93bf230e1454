//! Budgets and cost: a step sets its worst case aside from every budget that applies before
//! it calls the model, atomically in the database; runs that cannot end `budget_exhausted`;
//! each step's cost comes from the configured price table, and `GET /usage` adds up to the
//! runs.

use figment::providers::Serialized;
use serde_json::{json, Value};

use crate::fake_llm::{LlmApp, Script};
use crate::helpers::{backend_tests, Backend, TestTenant};

backend_tests!(@with crate::budgets::priced_app;
    a_tenant_budget_holds_across_twenty_concurrent_runs,
    an_agent_cost_cap_ends_the_run_and_usage_adds_up,
);

/// The fake provider's model costs $1,000 per million prompt tokens and $2,000 per million
/// answer tokens (its answers use 11 + 7 tokens: $0.025); a step's answer is bounded by
/// 20 tokens when a budget applies. Tenants on `growth` start with a budget of 777 tokens.
pub async fn priced_app(backend: Backend) -> Option<LlmApp> {
    LlmApp::start_with(backend, |f| {
        f.merge(Serialized::default("llm.max_tokens_per_step", 20))
            .merge(Serialized::default("plans.growth.monthly_token_budget", 777))
            .merge(Serialized::default(
                "providers.fake.prices",
                json!([{ "model": "fake-model", "input_per_million": 1000.0, "output_per_million": 2000.0 }]),
            ))
    })
    .await
}

async fn agent(ctx: &LlmApp, tenant: &TestTenant, name: &str, config: Value) -> String {
    let res = ctx
        .post(
            "/api/v1/agents",
            &tenant.key,
            json!({ "name": name, "config": config }),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    res.data()["id"].as_str().unwrap().to_string()
}

async fn execute(ctx: &LlmApp, tenant: &TestTenant, agent: &str, project: &str) -> Value {
    let res = ctx
        .post(
            &format!("/api/v1/agents/{agent}/execute"),
            &tenant.key,
            json!({ "goal": "Say something", "projectId": project, "wait": 20 }),
        )
        .await;
    assert!(res.status == 200 || res.status == 202, "{}", res.body);
    res.data().clone()
}

async fn a_tenant_budget_holds_across_twenty_concurrent_runs(ctx: &LlmApp) {
    const BUDGET: u64 = 300;
    let tenant = ctx.tenant("Acme", "enterprise").await;
    let project = ctx.project(&tenant.key, "p").await;
    let patched = ctx
        .patch(
            &format!("/api/v1/tenants/{}/settings", tenant.id),
            &tenant.key,
            json!({ "monthly_token_budget": BUDGET, "max_concurrent_runs": 20 }),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.data()["settings"]["monthly_token_budget"], BUDGET);
    let writer = agent(ctx, &tenant, "writer", json!({})).await;
    let reader = agent(ctx, &tenant, "reader", json!({})).await;
    for _ in 0..20 {
        ctx.llm.push(Script::Slow(
            vec!["a ", "b"],
            std::time::Duration::from_millis(30),
        ));
    }
    let runs = futures_util::future::join_all((0..20).map(|i| {
        let agent = if i % 2 == 0 { &writer } else { &reader };
        execute(ctx, &tenant, agent, &project)
    }))
    .await;

    let (mut completed, mut refused, mut settled) = (0, 0, 0);
    for run in &runs {
        match run["status"].as_str().unwrap() {
            "completed" => {
                completed += 1;
                settled += run["usage"]["total_tokens"].as_u64().unwrap();
            }
            "failed" => {
                assert_eq!(run["error"]["code"], "budget_exhausted", "{run}");
                assert_eq!(run["error"]["details"]["budget"], "tenant.tokens", "{run}");
                refused += 1;
            }
            other => panic!("a run ended {other}: {run}"),
        }
    }
    // What was used never passes the budget (each step set its worst case aside first,
    // and a worst case here is above what a step uses), and the budget was used.
    assert!(settled <= BUDGET, "{settled} tokens used of {BUDGET}");
    assert!(
        completed >= 3 && refused >= 1,
        "{completed} completed, {refused} refused"
    );
    let spent = ctx.state.store.spent_this_month(&tenant.id).await.unwrap();
    assert_eq!(
        spent.tokens, settled,
        "the month's total is what the runs used"
    );

    // The usage report adds up to the runs, by agent.
    let report = ctx.get("/api/v1/usage", &tenant.key).await;
    assert_eq!(report.status, 200, "{}", report.body);
    let report = report.data();
    assert_eq!(report["total"]["total_tokens"], settled);
    let lines = report["lines"].as_array().unwrap();
    let of = |agent: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l["agent_id"] == agent)
            .map(|l| l["total_tokens"].as_u64().unwrap())
            .sum()
    };
    let used_by = |agent: &str| -> u64 {
        runs.iter()
            .filter(|r| r["agent_id"] == agent && r["status"] == "completed")
            .map(|r| r["usage"]["total_tokens"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(of(&writer), used_by(&writer));
    assert_eq!(of(&reader), used_by(&reader));

    // Once the budget is at or below what was used, execute is refused at once.
    ctx.patch(
        &format!("/api/v1/tenants/{}/settings", tenant.id),
        &tenant.key,
        json!({ "monthly_token_budget": settled }),
    )
    .await;
    let refused = ctx
        .post(
            &format!("/api/v1/agents/{writer}/execute"),
            &tenant.key,
            json!({ "goal": "more", "projectId": project }),
        )
        .await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.code(), "RATE_LIMIT_EXCEEDED");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("budget"));
    // Another tenant is not held back by it.
    let other = ctx.tenant("Other", "free").await;
    let other_project = ctx.project(&other.key, "p").await;
    let other_agent = agent(ctx, &other, "a", json!({})).await;
    ctx.llm.push(Script::Text(vec!["fine"]));
    assert_eq!(
        execute(ctx, &other, &other_agent, &other_project).await["status"],
        "completed"
    );
    let theirs = ctx.get("/api/v1/usage", &other.key).await;
    assert_eq!(
        theirs.data()["total"]["total_tokens"],
        18,
        "only its own use"
    );
}

async fn an_agent_cost_cap_ends_the_run_and_usage_adds_up(ctx: &LlmApp) {
    let tenant = ctx.tenant("Acme", "free").await;
    let project = ctx.project(&tenant.key, "p").await;
    // $0.001 cannot cover one step's worst case ($0.04 for the 20-token answer alone).
    let capped = agent(ctx, &tenant, "capped", json!({ "maxCostPerRun": 0.001 })).await;
    let shown = ctx
        .get(&format!("/api/v1/agents/{capped}"), &tenant.key)
        .await;
    assert_eq!(shown.data()["config"]["maxCostPerRun"], 0.001);
    let before = ctx.llm.requests().len();
    let run = execute(ctx, &tenant, &capped, &project).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "budget_exhausted");
    assert_eq!(run["error"]["details"]["budget"], "run.cost", "{run}");
    assert_eq!(ctx.llm.requests().len(), before, "the model was not called");

    // A generous cap: two steps, each 11 + 7 tokens at the configured price.
    let roomy = agent(
        ctx,
        &tenant,
        "roomy",
        json!({ "maxCostPerRun": 1.0, "maxTokensPerRun": 10000 }),
    )
    .await;
    ctx.llm.push(Script::Text(vec!["one"]));
    let first = execute(ctx, &tenant, &roomy, &project).await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["usage"]["cost_usd"], 0.025, "{first}");
    assert_eq!(first["steps"][0]["usage"]["cost_usd"], 0.025);
    // The step's answer was bounded when a budget applied.
    assert_eq!(ctx.llm.requests().last().unwrap()["max_tokens"], 20);
    ctx.llm.push(Script::Text(vec!["two"]));
    let second = execute(ctx, &tenant, &roomy, &project).await;
    assert_eq!(second["status"], "completed");

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let report = ctx
        .get(
            &format!("/api/v1/usage?from={today}&to={today}"),
            &tenant.key,
        )
        .await;
    assert_eq!(report.status, 200, "{}", report.body);
    let report = report.data();
    assert_eq!(report["total"]["cost_usd"], 0.05, "{report}");
    assert_eq!(report["total"]["total_tokens"], 36);
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{report}");
    assert_eq!(
        (
            &lines[0]["agent_id"],
            &lines[0]["provider"],
            &lines[0]["model"],
            &lines[0]["runs"]
        ),
        (
            &json!(roomy),
            &json!("fake"),
            &json!("fake-model"),
            &json!(2)
        )
    );
    let one_agent = ctx
        .get(&format!("/api/v1/usage?agent_id={capped}"), &tenant.key)
        .await;
    assert_eq!(
        one_agent.data()["lines"],
        json!([]),
        "the capped agent used nothing"
    );
    let bad = ctx.get("/api/v1/usage?from=yesterday", &tenant.key).await;
    assert_eq!((bad.status, bad.code()), (400, "VALIDATION_ERROR"));

    // Cost counters by provider and model.
    let metrics = ctx
        .client
        .get(format!("{}/metrics", ctx.address))
        .bearer_auth(&ctx.operator_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dgidgi_llm_cost_micro_usd_total")
                && l.contains("provider=\"fake\"")
                && l.contains("model=\"fake-model\"")),
        "{metrics}"
    );
}
