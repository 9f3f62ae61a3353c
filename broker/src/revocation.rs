//! What a person's or an issuer's revocation means for identities that come back: an
//! identity token authenticated at or before the revocation (`auth_time`, else `iat`) is
//! refused, so a stolen laptop's IdP session yields nothing new. Authenticating again at the
//! identity provider (a fresh `git jit login`, a new CI job) passes. The exchange and the
//! admin API both ask this one function.

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::identity::VerifiedIdentity;
use crate::store::{GrantStore, RevokeTarget};

/// `Ok` unless `identity`'s subject or issuer was revoked after it authenticated.
pub async fn identity_not_revoked(
    store: &dyn GrantStore,
    identity: &VerifiedIdentity,
) -> Result<(), ApiError> {
    let dims = [
        RevokeTarget::Subject(identity.subject.clone()).dimension(),
        RevokeTarget::Issuer(identity.issuer.clone()).dimension(),
    ];
    let marks = store.revoked_before(&dims).await?;
    let Some(latest) = marks.iter().flatten().max().copied() else {
        return Ok(());
    };
    let authenticated_ms = ["auth_time", "iat"]
        .iter()
        .find_map(|c| identity.claims.get(*c))
        // Verified identities carry only bounded NumericDates; anything else has no time.
        .and_then(|v| jit_proto::time::numeric_date(v).ok())
        .map(|s| s.saturating_mul(1000));
    match authenticated_ms {
        Some(at) if at > latest => Ok(()),
        // No time to compare: the revocation wins.
        _ => Err(ApiError::OAuth {
            status: StatusCode::FORBIDDEN,
            code: "access_denied",
            description: format!(
                "access of {} ({}) was revoked; authenticate again at the identity provider \
                 (`git jit login`) to ask for new access",
                identity.subject, identity.issuer
            ),
        }),
    }
}
