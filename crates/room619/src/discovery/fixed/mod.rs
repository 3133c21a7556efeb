//! The static backend's source: instances listed by hand in
//! `discovery.instances`, turned into [`Instance`]s with stable ids so a
//! reload changes only what changed.

use crate::{config::InstanceConfig, discovery::Instance};

/// The listed instances that are valid (validation already rejected the
/// others when the configuration was loaded).
pub(crate) fn instances(listed: &[InstanceConfig]) -> Vec<Instance> {
    listed
        .iter()
        .filter_map(|entry| {
            let version = semver::Version::parse(&entry.version).ok()?;
            let id = format!("listed-{}-{}-{}", entry.name, entry.version, entry.address);
            Some(Instance::new(entry.name.clone(), version, entry.address.clone()).with_id(id))
        })
        .collect()
}
