//! Geo pinning: a tenant's conversation goes only to a provider of the tenant's region
//! (GDPR chapter V transfers; data-residency clauses).

use crate::error::RegionError;

/// The region of providers that run in-process ([`Offline`](crate::Offline),
/// [`Scripted`](crate::Scripted)): no data leaves the host, so any tenant region accepts it.
pub const LOCAL_REGION: &str = "local";

/// Longest region label accepted, in bytes.
const REGION_LEN_MAX: usize = 64;

/// Accepts `provider_region` for a tenant pinned to `tenant_region`: they are equal after
/// trimming and ASCII lower-casing (`EU` = `eu`), or the provider is [`LOCAL_REGION`].
///
/// # Errors
/// [`RegionError::Invalid`] for an empty or over-long label (fails closed);
/// [`RegionError::Mismatch`] when the regions differ.
pub fn check_region(tenant_region: &str, provider_region: &str) -> Result<(), RegionError> {
    let tenant = normalize(tenant_region)?;
    let provider = normalize(provider_region)?;
    if provider == LOCAL_REGION || provider == tenant {
        Ok(())
    } else {
        Err(RegionError::Mismatch { tenant, provider })
    }
}

fn normalize(region: &str) -> Result<String, RegionError> {
    let r = region.trim();
    if r.is_empty()
        || r.len() > REGION_LEN_MAX
        || !r
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(RegionError::Invalid);
    }
    Ok(r.to_ascii_lowercase())
}
