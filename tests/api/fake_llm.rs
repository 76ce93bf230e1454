//! The application wired to the shared fake OpenAI-compatible server (`dgidgi-testkit`),
//! as providers `fake` (the default) and `backup`.

use figment::providers::Serialized;
use figment::Figment;

pub use dgidgi_testkit::{FakeLlm, Script};

use crate::helpers::{Backend, TestApp};

/// The application with two OpenAI-compatible providers, `fake` (the default) and
/// `backup`, both served by one [`FakeLlm`].
pub struct LlmApp {
    pub app: TestApp,
    pub llm: FakeLlm,
}

impl std::ops::Deref for LlmApp {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// The provider settings that point at `llm`, for an in-process app or (as env) a process.
pub fn provider_settings(llm: &FakeLlm) -> Vec<(&'static str, String)> {
    vec![
        ("providers.fake.kind", "openai".into()),
        ("providers.fake.base_url", llm.base_url.clone()),
        ("providers.fake.model", "fake-model".into()),
        ("providers.backup.kind", "openai".into()),
        ("providers.backup.base_url", llm.base_url.clone()),
        ("providers.backup.model", "backup-model".into()),
        ("llm.default_provider", "fake".into()),
        ("llm.retry_base_ms", "5".into()),
        ("llm.idle_timeout_ms", "400".into()),
    ]
}

impl LlmApp {
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |f| f).await
    }

    pub async fn start_with(
        backend: Backend,
        configure: impl FnOnce(Figment) -> Figment,
    ) -> Option<Self> {
        let llm = FakeLlm::start().await;
        let settings = provider_settings(&llm);
        let app = TestApp::spawn(backend, move |mut f| {
            for (key, value) in settings {
                f = match value.parse::<u64>() {
                    Ok(n) => f.merge(Serialized::default(key, n)),
                    Err(_) => f.merge(Serialized::default(key, value)),
                };
            }
            configure(f)
        })
        .await?;
        Some(Self { app, llm })
    }

    pub async fn stop(self) {
        self.app.stop().await;
        self.llm.stop().await;
    }
}
