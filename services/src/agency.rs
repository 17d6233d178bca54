//! Agencies: one login runs many businesses. An agency admin works in every tenant of the
//! agency as an admin, creates sub-accounts, and switches between them; the tenant a session
//! works in is stored with the session and changed only here, after checking access.

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use switchboard_domain::{AgencyId, TenantId, UserId};
use switchboard_entity::{agency, lookup, tenant};

use crate::accounts::{self, NewBusiness, check_business_name};
use crate::{App, ServiceError};

/// True when `user_id` administers `agency_id`.
///
/// # Errors
/// Database errors.
pub async fn is_admin(
    app: &App,
    agency_id: AgencyId,
    user_id: UserId,
) -> Result<bool, ServiceError> {
    Ok(agency::admin::Entity::find_by_id((agency_id, user_id))
        .one(&app.db.read)
        .await?
        .is_some())
}

/// A tenant the user may switch to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub tenant_id: TenantId,
    pub name: String,
    /// Reached as an agency admin rather than a member.
    pub via_agency: bool,
}

/// What a user can reach: the tenants to switch between, and the agency they run.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// Their memberships (oldest first), then the tenants of the agencies they administer
    /// (by name).
    pub choices: Vec<Choice>,
    /// The agency they administer, if any (the first one, by creation).
    pub agency: Option<agency::Model>,
}

/// Every tenant `user_id` may work in, and the agency they run.
///
/// # Errors
/// Database errors.
pub async fn reach(app: &App, user_id: UserId) -> Result<Reach, ServiceError> {
    let member_of = lookup::memberships_of(&app.db.read, user_id).await?;
    let agencies: Vec<AgencyId> = agency::admin::Entity::find()
        .filter(agency::admin::Column::UserId.eq(user_id))
        .order_by_asc(agency::admin::Column::CreatedAt)
        .all(&app.db.read)
        .await?
        .into_iter()
        .map(|a| a.agency_id)
        .collect();
    let agency = match agencies.first() {
        Some(id) => agency::Entity::find_by_id(*id).one(&app.db.read).await?,
        None => None,
    };
    let tenants = lookup::reachable_tenants(&app.db.read, &member_of, agencies).await?;
    let choice = |t: &tenant::Model, via_agency| Choice {
        tenant_id: t.id,
        name: t.name.clone(),
        via_agency,
    };
    let mut choices: Vec<Choice> = member_of
        .iter()
        .filter_map(|id| tenants.iter().find(|t| t.id == *id))
        .map(|t| choice(t, false))
        .collect();
    choices.extend(
        tenants
            .iter()
            .filter(|t| !member_of.contains(&t.id))
            .map(|t| choice(t, true)),
    );
    Ok(Reach { choices, agency })
}

/// Switches the session to `tenant_id`.
///
/// # Errors
/// [`ServiceError::NotFound`] when the user may not work there (another agency's tenant
/// included).
pub async fn switch(
    app: &App,
    session_id: &str,
    user_id: UserId,
    tenant_id: TenantId,
) -> Result<(), ServiceError> {
    if accounts::workspace(app, user_id, tenant_id)
        .await?
        .is_none()
    {
        return Err(ServiceError::NotFound);
    }
    accounts::set_session_tenant(app, session_id, user_id, tenant_id).await
}

/// Switches the session to the first business `user_id` may work in
/// ([`reach`]'s order, as at sign-in). False when there is none.
///
/// # Errors
/// Database errors.
pub async fn switch_to_first(
    app: &App,
    session_id: &str,
    user_id: UserId,
) -> Result<bool, ServiceError> {
    let Some(first) = reach(app, user_id).await?.choices.into_iter().next() else {
        return Ok(false);
    };
    accounts::set_session_tenant(app, session_id, user_id, first.tenant_id).await?;
    Ok(true)
}

/// Creates an agency run by `user_id` and its first business, and switches the session to it.
///
/// # Errors
/// Invalid names or time zone (naming the field); database errors.
pub async fn create_agency(
    app: &App,
    session_id: &str,
    user_id: UserId,
    agency_name: &str,
    first: NewBusiness,
) -> Result<(AgencyId, TenantId), ServiceError> {
    let name = check_business_name(agency_name)
        .map_err(|_| ServiceError::invalid("agency_name", "must be 1 to 100 characters"))?;
    let first = accounts::check_business(app, &first).await?;
    let agency_id = AgencyId::new();
    let now = Utc::now();
    let txn = app.db.write.begin().await?;
    agency::ActiveModel {
        id: Set(agency_id),
        name: Set(name),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    agency::admin::ActiveModel {
        agency_id: Set(agency_id),
        user_id: Set(user_id),
        created_at: Set(now),
    }
    .insert(&txn)
    .await?;
    let tenant_id = accounts::insert_business(app, &txn, &first, Some(agency_id)).await?;
    txn.commit().await?;
    accounts::set_session_tenant(app, session_id, user_id, tenant_id).await?;
    Ok((agency_id, tenant_id))
}

/// Creates a sub-account of the agency `user_id` administers and switches the session to it.
///
/// # Errors
/// [`ServiceError::Forbidden`] when the user administers no agency; invalid input.
pub async fn create_sub_account(
    app: &App,
    session_id: &str,
    user_id: UserId,
    new: NewBusiness,
) -> Result<TenantId, ServiceError> {
    let Some(agency) = reach(app, user_id).await?.agency else {
        return Err(ServiceError::Forbidden(
            "only agency admins create sub-accounts".into(),
        ));
    };
    let new = accounts::check_business(app, &new).await?;
    let txn = app.db.write.begin().await?;
    let tenant_id = accounts::insert_business(app, &txn, &new, Some(agency.id)).await?;
    txn.commit().await?;
    accounts::set_session_tenant(app, session_id, user_id, tenant_id).await?;
    Ok(tenant_id)
}
