//! The runtime's own secrets: the JWT signing secret and the key that seals stored secrets
//! (webhook secrets, tenants' bucket keys). They are never kept in the database, so that a
//! dump or a backup of it opens nothing and mints nothing.
//!
//! Each comes from configuration (`auth.jwt_secret`, `secrets.key`; usually environment
//! variables). Where one is not configured, the embedded default (SQLite) keeps it in a key
//! file beside the database, created once with owner-only permissions; PostgreSQL, whose
//! nodes must all share them, requires them in configuration (or a key file named in
//! `secrets.key_file`).
//!
//! Rotation of the sealing key: configure the new `secrets.key` and list the old one in
//! `secrets.previous_keys`; at start-up every stored value that only an old key opens is
//! sealed again with the new one, after which the old key can be removed. Databases from
//! before this rule kept both secrets in `runtime_settings`: start-up treats that stored key
//! as a previous key (reseals with the current one) and deletes both rows.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::Config;
use crate::sealing::Sealer;
use crate::storage::Storage;
use crate::store::{Backend, Store};

/// The secrets the process runs with.
pub struct Secrets {
    pub jwt_secret: String,
    pub sealer: Sealer,
    /// The database still holds secrets from before they left it (deleted by [`reseal`]).
    legacy: bool,
}

/// Where `jwt_secret` and `secrets_key` lines live when configuration does not give them.
pub fn key_file(config: &Config, backend: Backend) -> Option<PathBuf> {
    if !config.secrets.key_file.is_empty() {
        return Some(PathBuf::from(&config.secrets.key_file));
    }
    if backend != Backend::Sqlite {
        return None;
    }
    let rest = config
        .database
        .url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//");
    let db = Path::new(rest.split('?').next().unwrap_or(rest));
    Some(db.with_file_name("dgidgi.keys"))
}

/// Reads the key file, creating it (mode 0600) with fresh secrets when it does not exist.
fn read_or_create(path: &Path) -> anyhow::Result<(String, String)> {
    if !path.exists() {
        let contents = format!(
            "# dgidgi secrets: keep this file private and back it up apart from the database.\n\
             jwt_secret={}\nsecrets_key={}\n",
            random_secret(),
            Sealer::generate_key()
        );
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("secrets.key_file: cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("secrets.key_file: cannot create {}", path.display()))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        tracing::info!(path = %path.display(), "created the key file (JWT secret and sealing key)");
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the key file is readable by others; chmod 600 it");
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("secrets.key_file: cannot read {}", path.display()))?;
    let value = |name: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{}: no {name}= line", path.display()))
    };
    Ok((value("jwt_secret")?, value("secrets_key")?))
}

/// The process's secrets; moves legacy ones out of the database and reseals what a
/// previous key sealed (see the module's documentation).
pub async fn load(config: &Config, store: &Store) -> anyhow::Result<Secrets> {
    let (mut jwt_secret, mut key) = (config.auth.jwt_secret.clone(), config.secrets.key.clone());
    if jwt_secret.is_empty() || key.is_empty() {
        let Some(path) = key_file(config, store.backend()) else {
            bail!(
                "auth.jwt_secret and secrets.key are required on PostgreSQL (every node must \
                 share them): set DGIDGI__AUTH__JWT_SECRET (at least 32 characters) and \
                 DGIDGI__SECRETS__KEY (base64 of 32 bytes, e.g. `openssl rand -base64 32`), \
                 or name a shared key file in secrets.key_file"
            );
        };
        let (file_jwt, file_key) = read_or_create(&path)?;
        if jwt_secret.is_empty() {
            jwt_secret = file_jwt;
        }
        if key.is_empty() {
            key = file_key;
        }
    }
    let (legacy, legacy_key) = store.legacy_secrets().await?;
    let mut previous = config.secrets.previous_keys.clone();
    if let Some(old) = legacy_key.filter(|old| *old != key) {
        tracing::warn!("moving the sealing key out of the database: stored secrets are sealed again with the configured key");
        previous.push(old);
    }
    let sealer = Sealer::with_previous(&key, &previous).map_err(|e| anyhow::anyhow!(e))?;
    Ok(Secrets {
        jwt_secret,
        sealer,
        legacy,
    })
}

/// Seals again, with the current key, every stored secret that only a previous key opens
/// (webhook secrets, tenants' bucket keys, MCP servers' headers); then deletes legacy secrets from the database.
/// Only after that may the previous keys be dropped from configuration.
pub async fn reseal(secrets: &Secrets, store: &Store, storage: &Storage) -> anyhow::Result<()> {
    let sealer = &secrets.sealer;
    if sealer.has_previous() {
        let mut resealed = 0;
        for (id, secret, previous) in store.webhook_secrets().await? {
            let current = sealer.reseal_bound(&secret, "");
            let before = previous.as_deref().and_then(|p| sealer.reseal_bound(p, ""));
            if current.is_some() || before.is_some() {
                let current = current.unwrap_or(secret);
                store
                    .set_webhook_secrets(&id, &current, before.or(previous).as_deref())
                    .await?;
                resealed += 1;
            }
        }
        resealed += storage.reseal().await.context("resealing bucket keys")?;
        for (id, tenant_id, sealed) in store.mcp_server_headers().await? {
            if let Some(current) = sealer.reseal_bound(&sealed, &tenant_id) {
                store.set_mcp_server_headers(&id, &current).await?;
                resealed += 1;
            }
        }
        tracing::info!(resealed, "stored secrets sealed with the current key");
    }
    if secrets.legacy {
        store.forget_legacy_secrets().await?;
    }
    Ok(())
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
