//! Regions, plans and their features, as the configuration defines them, and the rules a
//! tenant's regional preferences must follow. No HTTP and no SQL here.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Config, PlanConfig, RegionConfig};

/// A tenant's regional preferences (the seed's schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    pub primary_region: String,
    pub secondary_region: Option<String>,
    pub data_residency_required: bool,
    pub data_residency_region: Option<String>,
    pub compliance_level: String,
}

impl Preferences {
    /// The jurisdiction the tenant's data must stay in, when residency is required.
    pub fn residency(&self) -> Option<&str> {
        self.data_residency_region
            .as_deref()
            .filter(|_| self.data_residency_required)
    }

    /// The field that chose region `id`: `primaryRegion` or `secondaryRegion`.
    fn field_of(&self, id: &str) -> &'static str {
        if id == self.primary_region {
            "primaryRegion"
        } else {
            "secondaryRegion"
        }
    }

    /// What a tenant that never chose has: this deployment's home region, no failover,
    /// no residency rule, the first compliance level.
    pub fn defaults(config: &Config) -> Self {
        Self {
            primary_region: config.node.region.clone(),
            secondary_region: None,
            data_residency_required: false,
            data_residency_region: None,
            compliance_level: config
                .compliance
                .levels
                .first()
                .cloned()
                .unwrap_or_else(|| "standard".into()),
        }
    }
}

/// Why a request is refused: a bad field, or a feature the tenant's plan lacks.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Invalid { field: String, reason: String },
    Gated(FeatureCheck),
}

fn invalid(field: &str, reason: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The answer to "may this tenant use this feature?".
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeatureCheck {
    pub feature_key: String,
    pub allowed: bool,
    pub plan: String,
    /// The lowest plan that includes the feature (`None`: no plan does).
    pub required_plan: Option<String>,
    pub limits: Value,
}

/// The plan's limits, as the feature check shows them.
pub fn limits(plan: &PlanConfig) -> Value {
    json!({
        "requestsPerWindowPerKey": plan.rate_limit.per_key,
        "requestsPerWindowPerTenant": plan.rate_limit.per_tenant,
        "maxConcurrentRuns": plan.max_concurrent_runs,
        "secondaryRegion": plan.secondary_region,
        "byos": plan.byos,
        "dataResidency": plan.data_residency,
        "complianceLevels": plan.compliance_levels,
    })
}

/// Whether `plan` allows `feature_key`: `secondaryRegion`, `byos`, `dataResidency` or
/// `compliance.<level>`. `None` for a key no plan knows. A tenant's own feature flag set
/// to false switches a feature off; it never switches on what the plan lacks.
pub fn check_feature(
    config: &Config,
    plan_name: &str,
    flags: &std::collections::BTreeMap<String, bool>,
    feature_key: &str,
) -> Option<FeatureCheck> {
    let gate: Box<dyn Fn(&PlanConfig) -> bool> = match feature_key {
        "secondaryRegion" => Box::new(|p| p.secondary_region),
        "byos" => Box::new(|p| p.byos),
        "dataResidency" => Box::new(|p| p.data_residency),
        key => {
            let level = key.strip_prefix("compliance.")?.to_string();
            if !config.compliance.levels.contains(&level) {
                return None;
            }
            Box::new(move |p| p.compliance_levels.contains(&level))
        }
    };
    let plan = config.plan(plan_name);
    Some(FeatureCheck {
        feature_key: feature_key.to_string(),
        allowed: gate(plan) && flags.get(feature_key) != Some(&false),
        plan: plan_name.to_string(),
        required_plan: config.lowest_plan(gate).map(str::to_string),
        limits: limits(plan),
    })
}

/// Refuses a feature the tenant may not use.
pub fn require_feature(
    config: &Config,
    plan: &str,
    flags: &std::collections::BTreeMap<String, bool>,
    feature_key: &str,
) -> Result<(), Refusal> {
    match check_feature(config, plan, flags, feature_key) {
        Some(check) if check.allowed => Ok(()),
        Some(check) => Err(Refusal::Gated(check)),
        None => Err(invalid(
            "featureKey",
            format!("'{feature_key}' is not a feature"),
        )),
    }
}

/// The region `id`, which must exist and be available.
pub fn region<'a>(config: &'a Config, field: &str, id: &str) -> Result<&'a RegionConfig, Refusal> {
    let region = config.regions.get(id).ok_or_else(|| {
        let known: Vec<&str> = config.regions.keys().map(String::as_str).collect();
        invalid(
            field,
            format!("'{id}' is not a region (one of: {})", known.join(", ")),
        )
    })?;
    if !region.available {
        return Err(invalid(field, format!("region '{id}' is not available")));
    }
    Ok(region)
}

/// Whether data bound to `residency` (a jurisdiction such as `eu`, or a region id) may live
/// in region `id`.
pub fn satisfies(config: &Config, id: &str, residency: &str) -> bool {
    id == residency
        || config
            .regions
            .get(id)
            .is_some_and(|r| r.residency.iter().any(|j| j == residency))
}

/// Checks the preferences a tenant on `plan` would have after a change. Plan gates apply to
/// what the change asks for (`changed` names those fields), so that a tenant moved to a
/// smaller plan can still change other fields; the consistency rules apply to the whole.
pub fn check_preferences(
    config: &Config,
    plan: &str,
    flags: &std::collections::BTreeMap<String, bool>,
    prefs: &Preferences,
    changed: &[&str],
) -> Result<(), Refusal> {
    let asked = |field: &str| changed.contains(&field);
    let primary = region(config, "primaryRegion", &prefs.primary_region)?;
    let mut regions = vec![(&prefs.primary_region, primary)];
    if let Some(secondary) = &prefs.secondary_region {
        if asked("secondaryRegion") {
            require_feature(config, plan, flags, "secondaryRegion")?;
        }
        if secondary == &prefs.primary_region {
            return Err(invalid("secondaryRegion", "must differ from primaryRegion"));
        }
        regions.push((secondary, region(config, "secondaryRegion", secondary)?));
    }
    if prefs.data_residency_required {
        if asked("dataResidencyRequired") || asked("dataResidencyRegion") {
            require_feature(config, plan, flags, "dataResidency")?;
        }
        let Some(residency) = &prefs.data_residency_region else {
            return Err(invalid(
                "dataResidencyRegion",
                "is required when dataResidencyRequired is true",
            ));
        };
        for (id, _) in &regions {
            if !satisfies(config, id, residency) {
                return Err(invalid(
                    prefs.field_of(id),
                    format!("region '{id}' does not keep data in '{residency}'"),
                ));
            }
        }
    }
    let level = &prefs.compliance_level;
    if !config.compliance.levels.contains(level) {
        return Err(invalid(
            "complianceLevel",
            format!("must be one of: {}", config.compliance.levels.join(", ")),
        ));
    }
    if asked("complianceLevel") {
        require_feature(config, plan, flags, &format!("compliance.{level}"))?;
    }
    for (id, region) in &regions {
        if !region.compliance.contains(level) {
            return Err(invalid(
                prefs.field_of(id),
                format!("region '{id}' does not offer compliance level '{level}'"),
            ));
        }
    }
    Ok(())
}

/// Whether this node serves a tenant with these preferences: its primary region is this
/// node's, or its secondary is and the primary is unavailable (failover).
pub fn serves(config: &Config, prefs: &Preferences) -> (bool, &'static str) {
    let here = &config.node.region;
    if &prefs.primary_region == here {
        return (true, "primary");
    }
    let primary_down = config
        .regions
        .get(&prefs.primary_region)
        .is_none_or(|r| !r.available);
    if prefs.secondary_region.as_ref() == Some(here) && primary_down {
        return (true, "failover");
    }
    (false, "other_region")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_figment(Config::defaults()).unwrap()
    }

    fn prefs(primary: &str) -> Preferences {
        Preferences {
            primary_region: primary.into(),
            ..Preferences::defaults(&config())
        }
    }

    #[test]
    fn a_secondary_region_needs_growth() {
        let c = config();
        let flags = Default::default();
        let p = Preferences {
            secondary_region: Some("us-west".into()),
            ..prefs("us-east")
        };
        match check_preferences(&c, "starter", &flags, &p, &["secondaryRegion"]) {
            Err(Refusal::Gated(check)) => {
                assert_eq!(check.feature_key, "secondaryRegion");
                assert_eq!(check.required_plan.as_deref(), Some("growth"));
            }
            other => panic!("{other:?}"),
        }
        assert!(check_preferences(&c, "growth", &flags, &p, &["secondaryRegion"]).is_ok());
        // Kept after a downgrade, as long as it is not what the change asks for.
        assert!(check_preferences(&c, "starter", &flags, &p, &["complianceLevel"]).is_ok());
    }

    #[test]
    fn residency_binds_every_region() {
        let c = config();
        let flags = Default::default();
        let mut p = Preferences {
            data_residency_required: true,
            data_residency_region: Some("eu".into()),
            ..prefs("eu-west")
        };
        assert!(check_preferences(&c, "growth", &flags, &p, &["dataResidencyRequired"]).is_ok());
        p.secondary_region = Some("us-east".into());
        assert!(matches!(
            check_preferences(&c, "growth", &flags, &p, &[]),
            Err(Refusal::Invalid { field, .. }) if field == "secondaryRegion"
        ));
        p.secondary_region = Some("eu-central".into());
        assert!(check_preferences(&c, "growth", &flags, &p, &[]).is_ok());
        p.data_residency_region = None;
        assert!(matches!(
            check_preferences(&c, "growth", &flags, &p, &[]),
            Err(Refusal::Invalid { field, .. }) if field == "dataResidencyRegion"
        ));
    }

    #[test]
    fn a_flag_switches_a_feature_off_but_never_on() {
        let c = config();
        let mut flags = std::collections::BTreeMap::new();
        flags.insert("byos".to_string(), true);
        assert!(!check_feature(&c, "free", &flags, "byos").unwrap().allowed);
        flags.insert("byos".to_string(), false);
        assert!(
            !check_feature(&c, "enterprise", &flags, "byos")
                .unwrap()
                .allowed
        );
        assert!(check_feature(&c, "free", &flags, "teleport").is_none());
        let hipaa = check_feature(&c, "growth", &flags, "compliance.hipaa").unwrap();
        assert_eq!(hipaa.required_plan.as_deref(), Some("enterprise"));
    }
}
