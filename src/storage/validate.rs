//! A real round trip to a tenant's storage: list the bucket, write a probe object, read it
//! back, find it in a listing, delete it. Each check reports its latency; the first failure
//! stops the rest and names its reason.

use std::sync::Arc;
use std::time::Instant;

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;

/// Why a check failed: a stable code (`bad_credentials`, `access_denied`, `no_such_bucket`,
/// `region_mismatch`, `unreachable`, `forbidden_address`, `read_mismatch`,
/// `credentials_unreadable`, `storage_error`) and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: &'static str,
    /// `passed`, `failed`, or `skipped` (after an earlier failure).
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub valid: bool,
    pub checks: Vec<Check>,
    /// The first failure, when there is one.
    pub reason: Option<Failure>,
}

const CHECKS: [&str; 5] = ["bucket", "write", "read", "list", "delete"];

/// Runs every check against `store` (the tenant's root).
pub async fn validate(store: Arc<dyn ObjectStore>) -> Validation {
    let probe_dir = Path::from(".probe");
    let probe = probe_dir
        .clone()
        .join(format!("{}.txt", uuid::Uuid::now_v7()));
    let content = format!("dgidgi storage probe {}", uuid::Uuid::now_v7());
    let mut checks = Vec::new();
    let mut reason = None;
    for name in CHECKS {
        if reason.is_some() {
            checks.push(Check {
                name,
                status: "skipped",
                latency_ms: None,
                error: None,
            });
            continue;
        }
        let started = Instant::now();
        let outcome: Result<(), Failure> = match name {
            "bucket" => store
                .list(Some(&probe_dir))
                .try_next()
                .await
                .map(|_| ())
                .map_err(|e| describe(&e)),
            "write" => store
                .put(&probe, content.clone().into())
                .await
                .map(|_| ())
                .map_err(|e| describe(&e)),
            "read" => match store.get(&probe).await {
                Ok(got) => match got.bytes().await {
                    Ok(bytes) if bytes == content.as_bytes() => Ok(()),
                    Ok(_) => Err(Failure::new(
                        "read_mismatch",
                        "the object read back differs from the one written",
                    )),
                    Err(e) => Err(describe(&e)),
                },
                Err(e) => Err(describe(&e)),
            },
            "list" => match store.list(Some(&probe_dir)).try_collect::<Vec<_>>().await {
                Ok(found) if found.iter().any(|m| m.location == probe) => Ok(()),
                Ok(_) => Err(Failure::new(
                    "read_mismatch",
                    "the probe object written is missing from the listing",
                )),
                Err(e) => Err(describe(&e)),
            },
            _ => match store.delete(&probe).await {
                Ok(()) => match store.head(&probe).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Ok(_) => Err(Failure::new(
                        "read_mismatch",
                        "the probe object is still there after its delete",
                    )),
                    Err(e) => Err(describe(&e)),
                },
                Err(e) => Err(describe(&e)),
            },
        };
        let latency_ms = Some((started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0);
        match outcome {
            Ok(()) => checks.push(Check {
                name,
                status: "passed",
                latency_ms,
                error: None,
            }),
            Err(failure) => {
                checks.push(Check {
                    name,
                    status: "failed",
                    latency_ms,
                    error: Some(failure.clone()),
                });
                reason = Some(failure);
            }
        }
    }
    Validation {
        valid: reason.is_none(),
        checks,
        reason,
    }
}

/// The reason behind a storage error, from the service's error code and the transport
/// error. The service's own response text is not repeated (it can echo request details).
pub fn describe(error: &object_store::Error) -> Failure {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    let code = service_code(&text);
    let has = |needle: &str| text.contains(needle);
    let known = |c: &str| code.as_deref() == Some(c);
    if has("forbidden address") {
        let what = text
            .split("forbidden address: ")
            .nth(1)
            .and_then(|t| t.split(':').next())
            .unwrap_or("the endpoint resolves to an internal address");
        return Failure::new(
            "forbidden_address",
            format!("{what}, which outbound calls refuse"),
        );
    }
    let said = |what: &str| match &code {
        Some(c) => format!("{what} ({c})"),
        None => what.to_string(),
    };
    if [
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "NotSignedUp",
        "InvalidClientTokenId",
        "AuthenticationFailed",
        "InvalidAuthenticationInfo",
    ]
    .iter()
    .any(|c| known(c))
        || matches!(error, object_store::Error::Unauthenticated { .. })
    {
        return Failure::new(
            "bad_credentials",
            said("the storage service refused the access key or secret"),
        );
    }
    if ["NoSuchBucket", "ContainerNotFound"]
        .iter()
        .any(|c| known(c))
    {
        return Failure::new("no_such_bucket", said("the bucket does not exist"));
    }
    if [
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "IllegalLocationConstraintException",
        "IncorrectEndpoint",
    ]
    .iter()
    .any(|c| known(c))
        || has("301 Moved Permanently")
    {
        return Failure::new(
            "region_mismatch",
            said("the bucket is in another region than the one configured"),
        );
    }
    if [
        "AccessDenied",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
    ]
    .iter()
    .any(|c| known(c))
        || matches!(error, object_store::Error::PermissionDenied { .. })
    {
        return Failure::new(
            "access_denied",
            said("the credentials are valid but may not use this bucket"),
        );
    }
    if has("timed out") || has("deadline has elapsed") {
        return Failure::new("unreachable", "the storage endpoint did not answer in time");
    }
    if has("error sending request") || has("connect") || has("dns error") {
        let why = if has("Connection refused") {
            "connection refused"
        } else if has("dns error") || has("failed to lookup") {
            "the endpoint's name does not resolve"
        } else {
            "no connection"
        };
        return Failure::new(
            "unreachable",
            format!("the storage endpoint cannot be reached: {why}"),
        );
    }
    Failure::new(
        "storage_error",
        said("the storage service answered with an error"),
    )
}

/// The `<Code>` of an S3/Azure XML error body, if the text carries one.
fn service_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let end = text[start..].find("</Code>")? + start;
    Some(text[start..end].to_string()).filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_code_is_read_from_its_xml() {
        assert_eq!(
            service_code("403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code></Error>")
                .as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(service_code("no xml"), None);
    }
}
