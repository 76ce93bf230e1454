//! Start-up: builds the store, the actor system and the HTTP server from a [`Config`], the
//! same way for `dgidgi serve` and for tests (which bind port 0).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, Supervisor};
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Data};
use actix_web::{App, HttpServer};
use anyhow::Context;
use dgidgi_actors::chat::{ChatDeps, Sessions};
use dgidgi_actors::events::EventHub;
use dgidgi_actors::provider::ProviderSet;
use dgidgi_actors::run::{RunDeps, Runs};
use dgidgi_actors::webhook::{WebhookActor, WebhookSender, WebhookSettings, WebhookStore};
use dgidgi_actors::{ActorMeta, Tenants};
use tokio::signal::unix::{signal, SignalKind};
use utoipa_actix_web::AppExt;

use crate::auth::{generate_key, JwtIssuer, KeyType};
use crate::config::Config;
use crate::http::{self, AppState, Services};
use crate::ids::{now_rfc3339, IdKind};
use crate::providers::{run_settings, Providers};
use crate::storage::Storage;
use crate::store::{NewApiKey, Store};
use crate::webhooks::HttpSender;

/// A built, bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    pub state: Arc<AppState>,
    /// The operator key created because the database had none; shown once by `serve`.
    pub bootstrap_key: Option<String>,
}

impl Application {
    /// Connects and migrates the database, starts the actor arbiters and binds the listener.
    /// Must run inside an actix system (`#[actix_web::main]` or `#[actix_web::test]`).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let providers = Providers::from_config(&config)?;
        Self::build_with(config, providers).await
    }

    /// [`build`](Self::build) with the given providers (tests add their own).
    pub async fn build_with(config: Config, providers: Providers) -> anyhow::Result<Self> {
        // Installed first, so that what the actors count from the start is kept.
        let metrics = crate::telemetry::metrics();
        let store = Store::connect(&config.database)
            .await
            .with_context(|| "database.url: cannot open the database")?
            .with_lease(Duration::from_secs(config.cluster.lease_secs));
        store.migrate().await.context("applying migrations")?;
        store.hold_exclusively().await.context("database.url")?;

        let secrets = crate::secrets::load(&config, &store).await?;
        let jwt = JwtIssuer::new(&config.auth, secrets.jwt_secret.as_bytes());
        let sealer = secrets.sealer.clone();
        let storage = Storage::new(&config, store.clone(), sealer.clone());
        let mcp_client = crate::mcp::McpClient::new(&config, store.clone(), sealer.clone());
        crate::secrets::reseal(&secrets, &store, &storage).await?;

        let providers: Arc<dyn ProviderSet> = Arc::new(providers);
        let webhook_arbiter = Arbiter::new().handle();
        let arbiters: Vec<_> = (0..config.actors.arbiters)
            .map(|_| Arbiter::new().handle())
            .collect();
        let idle = Duration::from_secs(config.actors.tenant_idle_secs);
        let plan_caps = config
            .plans
            .iter()
            .map(|(name, plan)| (name.clone(), plan.max_concurrent_runs))
            .collect();
        let tenants = Tenants::new(
            Arc::new(store.clone()),
            arbiters.clone(),
            idle,
            Arc::new(plan_caps),
        );
        let runs = Runs::new(
            RunDeps {
                store: Arc::new(store.clone()),
                hub: EventHub::default(),
                providers: providers.clone(),
                tenants: tenants.clone(),
                settings: run_settings(&config),
                workspaces: Arc::new(storage.clone()),
                remote_tools: Arc::new(mcp_client.clone()),
            },
            arbiters.clone(),
        );
        let sessions = Sessions::new(
            ChatDeps {
                store: Arc::new(store.clone()),
                hub: runs.hub().clone(),
                providers: providers.clone(),
                runs: runs.clone(),
                settings: run_settings(&config),
                max_queue: config.chat.max_queue,
                idle_after: Duration::from_secs(config.chat.idle_secs),
            },
            arbiters,
        );
        // The heartbeat renews this node's leases and takes up runs no live node drives
        // (their owner died, or their actor here gave up while the database was away).
        let heartbeat = crate::cluster::start_heartbeat(
            store.clone(),
            runs.clone(),
            sessions.clone(),
            config.node.region.clone(),
            Duration::from_secs(config.cluster.heartbeat_secs.max(1)),
            Duration::from_secs(config.rate_limit.window_secs),
        )
        .await
        .context("writing this node's first heartbeat")?;
        let sender = HttpSender::new(
            sealer.clone(),
            Duration::from_secs(config.webhooks.timeout_secs),
            config.outbound.allow_private_targets,
        );
        let settings = WebhookSettings {
            retry_schedule: config
                .webhooks
                .retry_schedule_secs
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            disable: dgidgi_actors::webhook::Disable {
                failures: config.webhooks.disable_after_failures,
                failing_for: Duration::from_secs(config.webhooks.disable_after_secs),
            },
            poll_every: Duration::from_millis(config.webhooks.poll_ms),
            batch: 64,
            // An attempt takes at most the timeout; its record follows at once.
            hold: Duration::from_secs(config.webhooks.timeout_secs * 2 + 5),
        };
        let (webhook_store, webhook_sender): (Arc<dyn WebhookStore>, Arc<dyn WebhookSender>) =
            (Arc::new(store.clone()), Arc::new(sender));
        let webhook_actor = Arc::new(ActorMeta::new("webhook", "webhook-delivery"));
        let meta = webhook_actor.clone();
        Supervisor::start_in_arbiter(&webhook_arbiter, move |_| {
            WebhookActor::new(
                webhook_store.clone(),
                webhook_sender.clone(),
                settings.clone(),
                meta.clone(),
            )
        });
        let recovered = runs.recover().await.context("finding unfinished runs")?;
        if recovered > 0 {
            tracing::info!(
                runs = recovered,
                "resuming runs left unfinished by the last process"
            );
        }

        let recovered = sessions
            .recover()
            .await
            .context("finding unfinished chat sessions")?;
        if recovered > 0 {
            tracing::info!(
                sessions = recovered,
                "answering chat sessions left unfinished by the last process"
            );
        }

        let keys = crate::http::KeyCache::default();
        if store.backend() == crate::store::Backend::Postgres {
            crate::cluster::listen(
                config.database.url.clone(),
                store.clone(),
                runs.hub().clone(),
                runs.clone(),
                sessions.clone(),
                keys.clone(),
            )
            .context("starting the cluster listener")?;
        }

        let bootstrap_key = if store.count_operator_keys().await? == 0 {
            Some(create_operator_key(&store, "bootstrap").await?)
        } else {
            None
        };

        let listener = TcpListener::bind((config.server.host.as_str(), config.server.port))
            .with_context(|| {
                format!(
                    "server.host/server.port: cannot listen on {}:{}",
                    config.server.host, config.server.port
                )
            })?;
        let port = listener.local_addr()?.port();
        let workers = match config.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let shutdown_timeout = config.server.shutdown_timeout_secs;
        let state = AppState::new(Services {
            config,
            store,
            tenants,
            runs,
            sessions,
            providers,
            jwt,
            sealer,
            storage,
            metrics,
            webhook_actor,
            heartbeat,
            keys,
            mcp_client,
        });
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(Data::from(shared.clone()))
                .wrap(from_fn(http::middleware_request_context))
                .into_utoipa_app()
                .configure(http::routes)
                .into_app()
                .default_service(web::to(http::not_found))
        })
        // Streams are many small writes (tokens): send each at once rather than wait for
        // the previous one's acknowledgement (Nagle's algorithm).
        .on_connect(|conn, extensions| {
            if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
                use std::os::fd::AsRawFd;
                extensions.insert(http::sse::Connection(tcp.as_raw_fd()));
            }
        })
        .listen(listener)?
        .workers(workers)
        .shutdown_timeout(shutdown_timeout)
        // actix stops at once on SIGINT; we want SIGINT and SIGTERM both to let in-flight
        // requests finish, so the signals are ours (see `run_until_stopped`).
        .disable_signals()
        .run();
        Ok(Self {
            port,
            server,
            state,
            bootstrap_key,
        })
    }

    /// The port the server listens on (the real one when the configuration said 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (in-flight requests finish), then closes the database.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let store = self.state.store.clone();
        let handle = self.server.handle();
        let shutdown = self.state.shutdown.clone();
        // Registered before the port is announced, so no early signal finds them missing.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        actix_web::rt::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("stop signal received; finishing in-flight requests");
            shutdown.cancel();
            handle.stop(true).await;
        });
        let config = &self.state.config;
        let key_file = crate::secrets::key_file(config, self.state.store.backend())
            .filter(|_| config.auth.jwt_secret.is_empty() || config.secrets.key.is_empty())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none (secrets from configuration)".into());
        tracing::info!(
            port = self.port,
            url = %format!("http://{}:{}", config.server.host, self.port),
            database = %crate::store::redact(&config.database.url),
            storage = %config.storage.platform_root,
            key_file = %key_file,
            "dgidgi serving"
        );
        let served = self.server.await;
        store.close().await;
        served
    }
}

/// Creates a platform-operator key and returns its secret (stored only as a hash).
pub async fn create_operator_key(store: &Store, name: &str) -> anyhow::Result<String> {
    let key = generate_key(KeyType::Operator);
    store
        .create_key(&NewApiKey {
            id: IdKind::ApiKey.new_id(),
            tenant_id: None,
            name: name.to_string(),
            key_type: KeyType::Operator.as_str().into(),
            prefix: key.prefix,
            hash: key.hash,
            scopes: Vec::new(),
            environment: "production".into(),
            expires_at: None,
            created_at: now_rfc3339(),
        })
        .await
        .context("creating the operator key")?;
    Ok(key.secret)
}
