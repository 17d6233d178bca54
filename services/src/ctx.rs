//! [`TenantCtx`]: proof that the current unit of work acts for one tenant.

use std::fmt;

use switchboard_domain::TenantId;

/// The tenant a request, webhook or job acts for.
///
/// Made in exactly these places (DESIGN.md §4): a live session's workspace
/// ([`crate::accounts::session`]), an authenticated API request
/// ([`crate::tenancy::authenticate_api_key`]), a webhook after its signature was verified
/// ([`crate::webhooks`]), and a job, from the tenant id in its payload ([`TenantCtx::for_job`]).
/// The public simulator acts only for the seeded demo tenant ([`crate::tenancy::demo_tenant`],
/// [`crate::webhooks::simulate_sms`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TenantCtx {
    tenant_id: TenantId,
}

impl TenantCtx {
    pub(crate) fn new(tenant_id: TenantId) -> Self {
        Self { tenant_id }
    }

    /// For a job: the tenant id its payload carries (written by our own code when the job was
    /// enqueued inside that tenant's unit of work).
    pub fn for_job(tenant_id: TenantId) -> Self {
        Self { tenant_id }
    }

    /// The tenant.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
}

impl fmt::Debug for TenantCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantCtx({})", self.tenant_id)
    }
}
