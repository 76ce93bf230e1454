use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A tenant's regional preferences (the seed's schema).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    pub primary_region: String,
    pub secondary_region: Option<String>,
    pub data_residency_required: bool,
    pub data_residency_region: Option<String>,
    pub compliance_level: String,
}

impl From<crate::regions::Preferences> for Preferences {
    fn from(p: crate::regions::Preferences) -> Self {
        Self {
            primary_region: p.primary_region,
            secondary_region: p.secondary_region,
            data_residency_required: p.data_residency_required,
            data_residency_region: p.data_residency_region,
            compliance_level: p.compliance_level,
        }
    }
}

/// The answer to "may this tenant use this feature?".
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureCheck {
    pub feature_key: String,
    pub allowed: bool,
    pub plan: String,
    /// The lowest plan that includes the feature (`None`: no plan does).
    pub required_plan: Option<String>,
    pub limits: Value,
}

impl From<crate::regions::FeatureCheck> for FeatureCheck {
    fn from(c: crate::regions::FeatureCheck) -> Self {
        Self {
            feature_key: c.feature_key,
            allowed: c.allowed,
            plan: c.plan,
            required_plan: c.required_plan,
            limits: c.limits,
        }
    }
}
