//! Tenant files: platform storage (a local folder per region) or the tenant's own bucket
//! (BYOS: S3, R2, GCS through its S3 interoperability, Azure Blob), all through the
//! `object_store` crate. BYOS keys are sealed, bound to the tenant; calls to a bucket go
//! through the outbound-address guard.

mod files;
mod validate;

pub use files::ObjectFiles;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::{Deserialize, Serialize};

pub use validate::{validate, Check, Failure, Validation};

use crate::config::Config;
use crate::outbound;
use crate::regions::Preferences;
use crate::regions::Refusal;
use crate::sealing::Sealer;
use crate::store::{Placement, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    Platform,
    Byos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ByosProvider {
    S3,
    R2,
    Gcs,
    Azure,
}

impl ByosProvider {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "s3" => Self::S3,
            "r2" => Self::R2,
            "gcs" => Self::Gcs,
            "azure" => Self::Azure,
            _ => return None,
        })
    }
}

/// A bucket as a tenant asks for it (a PUT's byos* fields), not yet checked.
#[derive(Debug, Default)]
pub struct ByosRequest {
    pub provider: Option<String>,
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
}

fn invalid(field: &str, reason: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A tenant's bucket. The keys are sealed (AES-256-GCM, bound to the tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Byos {
    pub provider: ByosProvider,
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    pub access_key_sealed: String,
    pub secret_key_sealed: String,
    /// The access key as responses show it (its last four characters at most).
    pub access_key_masked: String,
}

/// A tenant's storage configuration, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageRecord {
    pub mode: StorageMode,
    /// Platform storage's region; none: the tenant's primary region.
    pub platform_region: Option<String>,
    pub byos: Option<Byos>,
    /// When the configuration last passed validation.
    pub validated_at: Option<String>,
    pub updated_at: Option<String>,
}

impl StorageRecord {
    pub fn platform() -> Self {
        Self {
            mode: StorageMode::Platform,
            platform_region: None,
            byos: None,
            validated_at: None,
            updated_at: None,
        }
    }
}

/// How an access key is shown: never more than its last four characters, and nothing of a
/// short one.
pub fn mask(key: &str) -> String {
    let n = key.chars().count();
    if n >= 12 {
        format!("****{}", key.chars().skip(n - 4).collect::<String>())
    } else {
        "****".into()
    }
}

/// What the sealing of a tenant's keys is bound to: a sealed key moved to another tenant
/// does not open.
fn binding(tenant_id: &str) -> String {
    format!("tenant-storage:{tenant_id}")
}

/// Opens tenants' storage.
#[derive(Clone)]
pub struct Storage {
    store: Store,
    sealer: Sealer,
    platform_root: std::path::PathBuf,
    home_region: String,
    timeout: Duration,
    allow_private: bool,
}

impl Storage {
    pub fn new(config: &Config, store: Store, sealer: Sealer) -> Self {
        Self {
            store,
            sealer,
            platform_root: config.storage.platform_root.clone().into(),
            home_region: config.node.region.clone(),
            timeout: Duration::from_secs(config.storage.timeout_secs),
            allow_private: config.outbound.allow_private_targets,
        }
    }

    pub fn seal(&self, tenant_id: &str, key: &str) -> String {
        self.sealer.seal_bound(key, &binding(tenant_id))
    }

    /// A tenant's bucket as asked for, checked, with its keys sealed (or the stored ones
    /// kept, when the request changes neither provider, endpoint nor bucket).
    pub fn byos_config(
        &self,
        tenant_id: &str,
        request: ByosRequest,
        stored: Option<&Byos>,
    ) -> Result<Byos, Refusal> {
        let provider = request
            .provider
            .as_deref()
            .ok_or_else(|| invalid("byosProvider", "is required for storageMode 'byos'"))?;
        let provider = ByosProvider::parse(provider)
            .ok_or_else(|| invalid("byosProvider", "must be one of: s3, r2, gcs, azure"))?;
        let bucket = request
            .bucket
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty() && b.len() <= 255 && !b.chars().any(char::is_control))
            .ok_or_else(|| invalid("byosBucket", "is required (1 to 255 characters)"))?;
        let endpoint = match request.endpoint.map(|e| e.trim().to_string()) {
            Some(e) if e.is_empty() => None,
            Some(e) => {
                check_endpoint(&e, self.allow_private)
                    .map_err(|reason| invalid("byosEndpoint", reason))?;
                Some(e)
            }
            None => None,
        };
        if provider == ByosProvider::R2 && endpoint.is_none() {
            return Err(invalid(
                "byosEndpoint",
                "is required for R2 (https://<account id>.r2.cloudflarestorage.com)",
            ));
        }
        let region = request
            .region
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        if let Some(r) = &region {
            if r.len() > 64 || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(invalid(
                    "byosRegion",
                    "must be a region name such as us-east-1",
                ));
            }
        }
        let key = |field: &str, given: Option<String>| -> Result<Option<String>, Refusal> {
            match given {
                Some(k) if k.is_empty() || k.len() > 1024 || k.chars().any(char::is_control) => {
                    Err(invalid(field, "must be 1 to 1024 characters"))
                }
                other => Ok(other),
            }
        };
        let (access, secret) = (
            key("byosAccessKey", request.access_key)?,
            key("byosSecretKey", request.secret_key)?,
        );
        let (access_key_sealed, secret_key_sealed, access_key_masked) = match (access, secret, stored) {
            (Some(a), Some(s), _) => (
                self.seal(tenant_id, &a),
                self.seal(tenant_id, &s),
                mask(&a),
            ),
            // Stored keys go only where they went before: a new provider, endpoint or bucket
            // needs them again, or a regions:write key could send them to a server it names.
            (None, None, Some(stored))
                if stored.provider != provider
                    || stored.endpoint != endpoint
                    || stored.bucket != bucket =>
            {
                return Err(invalid(
                    "byosAccessKey",
                    "is required again (with byosSecretKey) when the provider, endpoint or bucket changes",
                ))
            }
            (None, None, Some(stored)) => (
                stored.access_key_sealed.clone(),
                stored.secret_key_sealed.clone(),
                stored.access_key_masked.clone(),
            ),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(invalid(
                    "byosSecretKey",
                    "byosAccessKey and byosSecretKey are given together",
                ))
            }
            (None, None, None) => {
                return Err(invalid(
                    "byosAccessKey",
                    "is required (with byosSecretKey) the first time a bucket is configured",
                ))
            }
        };
        Ok(Byos {
            provider,
            endpoint,
            bucket,
            region,
            access_key_sealed,
            secret_key_sealed,
            access_key_masked,
        })
    }

    /// Seals every tenant's bucket keys again with the current key where only a previous
    /// key opens them (a rotation of `secrets.key`); answers how many tenants changed.
    pub async fn reseal(&self) -> crate::store::Result<usize> {
        let mut changed = 0;
        for (tenant_id, mut record) in self
            .store
            .placements::<StorageRecord>(Placement::Storage)
            .await?
        {
            let Some(byos) = record.byos.as_mut() else {
                continue;
            };
            let context = binding(&tenant_id);
            let access = self.sealer.reseal_bound(&byos.access_key_sealed, &context);
            let secret = self.sealer.reseal_bound(&byos.secret_key_sealed, &context);
            if access.is_none() && secret.is_none() {
                continue;
            }
            if let Some(a) = access {
                byos.access_key_sealed = a;
            }
            if let Some(s) = secret {
                byos.secret_key_sealed = s;
            }
            self.store
                .save_placement(&tenant_id, Placement::Storage, &record)
                .await?;
            changed += 1;
        }
        Ok(changed)
    }

    /// The tenant's storage configuration (platform storage when it never set one).
    pub async fn record(&self, tenant_id: &str) -> Result<StorageRecord, Failure> {
        self.store
            .placement(tenant_id, Placement::Storage)
            .await
            .map(|r| r.unwrap_or_else(StorageRecord::platform))
            .map_err(|e| Failure::new("storage_error", e.to_string()))
    }

    /// The region platform storage uses for the tenant.
    pub async fn platform_region(&self, tenant_id: &str, record: &StorageRecord) -> String {
        if let Some(region) = &record.platform_region {
            return region.clone();
        }
        match self
            .store
            .placement::<Preferences>(tenant_id, Placement::Preferences)
            .await
        {
            Ok(Some(prefs)) => prefs.primary_region,
            _ => self.home_region.clone(),
        }
    }

    /// The tenant's object store (its root: files of project P live under `projects/P/`).
    /// `validating` turns the bucket client's retries off, so that a check reports at once.
    pub async fn tenant_root(
        &self,
        tenant_id: &str,
        record: &StorageRecord,
        validating: bool,
    ) -> Result<Arc<dyn ObjectStore>, Failure> {
        match (&record.mode, &record.byos) {
            (StorageMode::Byos, Some(byos)) => self.bucket(tenant_id, byos, validating),
            (StorageMode::Byos, None) => Err(Failure::new(
                "storage_error",
                "BYOS is selected but no bucket is configured",
            )),
            (StorageMode::Platform, _) => {
                let region = self.platform_region(tenant_id, record).await;
                self.platform(&region, tenant_id)
            }
        }
    }

    fn platform(&self, region: &str, tenant_id: &str) -> Result<Arc<dyn ObjectStore>, Failure> {
        let root = self.platform_root.join(region).join(tenant_id);
        std::fs::create_dir_all(&root).map_err(|e| {
            Failure::new(
                "storage_error",
                format!("platform storage folder cannot be created: {e}"),
            )
        })?;
        let local = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Failure::new("storage_error", e.to_string()))?;
        Ok(Arc::new(local))
    }

    fn bucket(
        &self,
        tenant_id: &str,
        byos: &Byos,
        validating: bool,
    ) -> Result<Arc<dyn ObjectStore>, Failure> {
        let unseal = |sealed: &str| {
            self.sealer
                .open_bound(sealed, &binding(tenant_id))
                .map_err(|_| {
                    Failure::new(
                        "credentials_unreadable",
                        "the stored keys do not unseal for this tenant; store them again",
                    )
                })
        };
        let (access_key, secret_key) = (
            unseal(&byos.access_key_sealed)?,
            unseal(&byos.secret_key_sealed)?,
        );
        let allow_private = self.allow_private;
        let endpoint = match (&byos.endpoint, byos.provider) {
            (Some(e), _) => Some(e.clone()),
            (None, ByosProvider::Gcs) => Some("https://storage.googleapis.com".into()),
            (None, ByosProvider::R2) => {
                return Err(Failure::new(
                    "storage_error",
                    "R2 needs its account endpoint",
                ))
            }
            (None, _) => None,
        };
        let http = match &endpoint {
            Some(e) => check_endpoint(e, allow_private)
                .map_err(|reason| Failure::new("forbidden_address", reason))?,
            None => false,
        };
        let timeout = self.timeout;
        let retry = RetryConfig {
            max_retries: if validating { 0 } else { 3 },
            retry_timeout: timeout * 2,
            ..Default::default()
        };
        let connector = GuardedConnector {
            timeout,
            allow_private,
        };
        let built: object_store::Result<Arc<dyn ObjectStore>> = match byos.provider {
            ByosProvider::Azure => {
                let mut builder = MicrosoftAzureBuilder::new()
                    .with_account(access_key)
                    .with_access_key(secret_key)
                    .with_container_name(&byos.bucket)
                    .with_allow_http(http)
                    .with_retry(retry)
                    .with_http_connector(connector);
                if let Some(e) = endpoint {
                    builder = builder.with_endpoint(e);
                }
                builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            provider => {
                let default_region = if provider == ByosProvider::S3 {
                    "us-east-1"
                } else {
                    "auto"
                };
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&byos.bucket)
                    .with_region(byos.region.as_deref().unwrap_or(default_region))
                    .with_access_key_id(access_key)
                    .with_secret_access_key(secret_key)
                    .with_allow_http(http)
                    .with_retry(retry)
                    .with_http_connector(connector);
                if let Some(e) = endpoint {
                    builder = builder.with_endpoint(e);
                }
                builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
        };
        let bucket = built.map_err(|e| Failure::new("storage_error", e.to_string()))?;
        // Our files stay under one folder of the tenant's bucket.
        Ok(Arc::new(PrefixStore::new(bucket, "dgidgi")))
    }
}

/// Checks a bucket endpoint: an http(s) URL that the guard allows; plain http only where
/// private targets are allowed (keys must not cross a network in clear). True when http.
pub fn check_endpoint(raw: &str, allow_private: bool) -> Result<bool, String> {
    let url = outbound::check_url(raw, allow_private)?;
    let http = url.scheme() == "http";
    if http && !allow_private {
        return Err("must be an https URL".into());
    }
    Ok(http)
}

/// Builds bucket clients on the outbound client: the address guard on every resolved
/// address, no redirects, no proxy, a time limit.
#[derive(Debug)]
struct GuardedConnector {
    timeout: Duration,
    allow_private: bool,
}

impl HttpConnector for GuardedConnector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(outbound::client(
            self.timeout,
            self.allow_private,
            "dgidgi-storage",
        )))
    }
}
