use serde::Serialize;
use utoipa::ToSchema;

use super::all;

use crate::storage;

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    Platform,
    Byos,
}

impl From<storage::StorageMode> for StorageMode {
    fn from(m: storage::StorageMode) -> Self {
        match m {
            storage::StorageMode::Platform => Self::Platform,
            storage::StorageMode::Byos => Self::Byos,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ByosProvider {
    S3,
    R2,
    Gcs,
    Azure,
}

impl From<storage::ByosProvider> for ByosProvider {
    fn from(p: storage::ByosProvider) -> Self {
        match p {
            storage::ByosProvider::S3 => Self::S3,
            storage::ByosProvider::R2 => Self::R2,
            storage::ByosProvider::Gcs => Self::Gcs,
            storage::ByosProvider::Azure => Self::Azure,
        }
    }
}

/// Why a check failed: a stable code (`bad_credentials`, `access_denied`, `no_such_bucket`,
/// `region_mismatch`, `unreachable`, `forbidden_address`, `read_mismatch`,
/// `credentials_unreadable`, `storage_error`) and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl From<storage::Failure> for Failure {
    fn from(f: storage::Failure) -> Self {
        Self {
            code: f.code,
            message: f.message,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: &'static str,
    /// `passed`, `failed`, or `skipped` (after an earlier failure).
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl From<storage::Check> for Check {
    fn from(c: storage::Check) -> Self {
        Self {
            name: c.name,
            status: c.status,
            latency_ms: c.latency_ms,
            error: c.error.map(Into::into),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub valid: bool,
    pub checks: Vec<Check>,
    /// The first failure, when there is one.
    pub reason: Option<Failure>,
}

impl From<storage::Validation> for Validation {
    fn from(v: storage::Validation) -> Self {
        Self {
            valid: v.valid,
            checks: all(v.checks),
            reason: v.reason.map(Into::into),
        }
    }
}
