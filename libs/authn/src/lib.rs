//! Authentication and metering of incoming calls, as a tower layer.
//!
//! ```text
//! GrpcServer::new().add_service(AuthLayer::new(authorizer).metered(PATH, UsageKind::MeteredRequest).layer(svc))
//! ```
//!
//! Every call except `grpc.health.v1` and reflection must carry
//! `authorization: Bearer <access token>`. The layer asks the auth service's
//! `Authorize` (which re-reads the user, so a block, delete or tier change
//! takes effect on the very next call), then puts an [`Authorized`] into the
//! request extensions; handlers read it with [`authorized`]. For metered RPCs
//! it spends one unit with `ConsumeQuota`, and a refusal reaches the caller
//! as RESOURCE_EXHAUSTED with the auth service's `retry-after` metadata.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use reporunner_client::Transport;
use reporunner_proto::{
    auth::v1::{
        AuthorizeRequest, ConsumeQuotaRequest, ListTierPoliciesRequest, TierPolicy, UsageKind,
        auth_service_client::AuthServiceClient,
    },
    common::v1::{Principal, Tier},
};
use reporunner_tier::tier_label;
use tonic::{Status, metadata::MetadataValue, server::NamedService};
use tower::{Layer, Service};

/// The caller of a request, as the auth service established it.
#[derive(Clone, Debug, PartialEq)]
pub struct Authorized {
    pub principal: Principal,
    pub policy: TierPolicy,
    /// The caller's own access token, for calls made on their behalf.
    pub access_token: String,
}

/// The caller of `request`, put there by [`AuthLayer`]. UNAUTHENTICATED when
/// the service was not wrapped (a wiring defect, reported rather than panicked).
pub fn authorized<T>(request: &tonic::Request<T>) -> Result<&Authorized, Status> {
    request
        .extensions()
        .get::<Authorized>()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

/// How long the tier table is trusted before it is read again.
const TIER_TABLE_TTL: Duration = Duration::from_secs(60);

type TierTable = Arc<Vec<TierPolicy>>;

/// Asks the auth service who a token belongs to, spends quota, and checks
/// tier-restricted features.
#[derive(Clone, Debug)]
pub struct Authorizer {
    client: AuthServiceClient<Transport>,
    tiers: Arc<Mutex<Option<(Instant, TierTable)>>>,
}

impl Authorizer {
    /// Asks the auth service over `auth`: a channel to its endpoints, or
    /// the auth server of this process ([`Transport::in_process`]) when the
    /// node hosts both, which spares every call a socket round trip.
    pub fn new(auth: impl Into<Transport>) -> Self {
        Self {
            client: AuthServiceClient::new(auth.into()),
            tiers: Arc::default(),
        }
    }

    /// Every tier's policy, lowest first, cached for a minute.
    pub async fn tier_policies(&self) -> Result<TierTable, Status> {
        if let Ok(cache) = self.tiers.lock()
            && let Some((at, table)) = cache.as_ref()
            && at.elapsed() < TIER_TABLE_TTL
        {
            return Ok(table.clone());
        }
        let policies = self
            .client
            .clone()
            .list_tier_policies(ListTierPoliciesRequest {})
            .await?
            .into_inner()
            .policies;
        let table = Arc::new(policies);
        if let Ok(mut cache) = self.tiers.lock() {
            *cache = Some((Instant::now(), table.clone()));
        }
        Ok(table)
    }

    /// Refuses a tier-restricted feature with PERMISSION_DENIED naming the
    /// lowest tier whose policy `allows` it (or saying no tier does).
    /// `feature` is what the user asked for, e.g. "vector search".
    pub async fn require(
        &self,
        authorized: &Authorized,
        feature: &str,
        allows: impl Fn(&TierPolicy) -> bool,
    ) -> Result<(), Status> {
        if allows(&authorized.policy) {
            return Ok(());
        }
        let table = self.tier_policies().await?;
        Err(Status::permission_denied(denial(
            feature,
            tier_of(&authorized.policy),
            table.iter().find(|p| allows(p)).map(tier_of),
        )))
    }

    /// The principal and tier policy behind `access_token`.
    pub async fn authorize(&self, access_token: &str) -> Result<Authorized, Status> {
        let response = self
            .client
            .clone()
            .authorize(AuthorizeRequest {
                access_token: access_token.to_owned(),
            })
            .await?
            .into_inner();
        let principal = response
            .principal
            .ok_or_else(|| Status::internal("auth service returned no principal"))?;
        let policy = response
            .policy
            .ok_or_else(|| Status::internal("auth service returned no tier policy"))?;
        Ok(Authorized {
            principal,
            policy,
            access_token: access_token.to_owned(),
        })
    }

    /// Spends one unit of `kind` for the caller of `authorized`.
    pub async fn consume(&self, authorized: &Authorized, kind: UsageKind, rpc: &str) -> Result<(), Status> {
        let mut request = tonic::Request::new(ConsumeQuotaRequest {
            user_id: authorized.principal.user_id.clone(),
            kind: kind as i32,
            rpc: rpc.to_owned(),
        });
        let bearer = MetadataValue::try_from(format!("Bearer {}", authorized.access_token))
            .map_err(|_| Status::unauthenticated("the access token is not valid metadata"))?;
        request.metadata_mut().insert("authorization", bearer);
        self.client.clone().consume_quota(request).await.map(|_| ())
    }
}

fn tier_of(policy: &TierPolicy) -> Tier {
    Tier::try_from(policy.tier).unwrap_or(Tier::Unspecified)
}

/// The PERMISSION_DENIED message for a feature the caller's tier lacks.
fn denial(feature: &str, current: Tier, required: Option<Tier>) -> String {
    match required {
        Some(required) => format!(
            "{feature} needs the {} tier or higher; you are on the {} tier",
            tier_label(required.into()),
            tier_label(current.into())
        ),
        None => format!("{feature} is not available on any tier"),
    }
}

/// See the crate docs.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    authorizer: Authorizer,
    metered: Arc<HashMap<String, UsageKind>>,
}

impl AuthLayer {
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            authorizer,
            metered: Arc::default(),
        }
    }

    /// Meters calls to `path` (`/package.Service/Method`) as `kind`.
    pub fn metered(mut self, path: &str, kind: UsageKind) -> Self {
        Arc::make_mut(&mut self.metered).insert(path.to_owned(), kind);
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

/// A service wrapped by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// The longest bearer token accepted (an access token is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 8192;

/// The token of an `authorization` value, by the one rule every service
/// uses: the scheme `Bearer` in any case, then white space, then the token,
/// trimmed. A missing value, a value that is not ASCII text, another scheme,
/// and an empty or overlong token are UNAUTHENTICATED, with a message that
/// says what to send.
pub fn parse_bearer(value: Option<&[u8]>) -> Result<&str, Status> {
    let value = value
        .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`; log in first"))?;
    let text = std::str::from_utf8(value)
        .ok()
        .filter(|text| text.is_ascii())
        .ok_or_else(|| Status::unauthenticated("the authorization value is not ASCII text"))?;
    let text = text.trim();
    let (scheme, token) = text
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Status::unauthenticated(
            "the authorization value must be `Bearer <token>`",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::unauthenticated(
            "the bearer token is empty; send `authorization: Bearer <token>`",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Status::unauthenticated(format!(
            "the bearer token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    Ok(token)
}

/// The bearer token of an HTTP request's `authorization` header (see
/// [`parse_bearer`]).
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    parse_bearer(
        headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes),
    )
}

/// The bearer token of a gRPC request's `authorization` metadata (see
/// [`parse_bearer`]).
pub fn bearer_token<T>(request: &tonic::Request<T>) -> Result<&str, Status> {
    parse_bearer(
        request
            .metadata()
            .get(http::header::AUTHORIZATION.as_str())
            .map(MetadataValue::as_encoded_bytes),
    )
}

impl<S, B, R> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; swap so the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if exempt(&path) {
                return inner.call(request).await;
            }
            let token = bearer(request.headers()).map(str::to_owned);
            let outcome = async {
                let token = token?;
                let authorized = layer.authorizer.authorize(&token).await?;
                if let Some(kind) = layer.metered.get(&path) {
                    layer
                        .authorizer
                        .consume(&authorized, *kind, path.trim_start_matches('/'))
                        .await?;
                }
                Ok::<_, Status>(authorized)
            }
            .await;
            match outcome {
                Ok(authorized) => {
                    tracing::Span::current().record("user_id", authorized.principal.user_id.as_str());
                    request.extensions_mut().insert(authorized);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn header(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    fn metadata(value: &str) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        request
    }

    #[test]
    fn the_scheme_is_any_case_and_the_token_trimmed() {
        for value in [
            "Bearer abc",
            "bearer abc",
            "BEARER abc",
            "Bearer   abc  ",
            "  bEaReR\tabc",
        ] {
            assert_eq!(bearer(&header(value)).unwrap(), "abc", "{value:?}");
            assert_eq!(bearer_token(&metadata(value)).unwrap(), "abc", "{value:?}");
        }
    }

    #[test]
    fn missing_other_schemes_and_empty_tokens_are_unauthenticated() {
        let missing = bearer(&http::HeaderMap::new()).unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert!(
            missing.message().contains("log in first"),
            "{}",
            missing.message()
        );
        let missing = bearer_token(&tonic::Request::new(())).unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);

        for value in ["Basic abc", "Bearerabc", "Token abc"] {
            let refused = bearer(&header(value)).unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated, "{value:?}");
            assert!(
                refused.message().contains("Bearer <token>"),
                "{}",
                refused.message()
            );
            assert!(bearer_token(&metadata(value)).is_err(), "{value:?}");
        }
        for value in ["Bearer", "Bearer ", "bearer    "] {
            let empty = bearer(&header(value)).unwrap_err();
            assert_eq!(empty.code(), Code::Unauthenticated, "{value:?}");
            assert!(empty.message().contains("empty"), "{}", empty.message());
            let empty = bearer_token(&metadata(value)).unwrap_err();
            assert!(empty.message().contains("empty"), "{}", empty.message());
        }
    }

    #[test]
    fn overlong_and_non_ascii_values_are_refused() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        let refused = bearer(&header(&long)).unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(refused.message().contains("longer than"), "{}", refused.message());
        let longest = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES)).into_bytes();
        assert_eq!(parse_bearer(Some(&longest)).unwrap().len(), MAX_TOKEN_BYTES);
        let not_text = parse_bearer(Some("Bearer ünï".as_bytes())).unwrap_err();
        assert!(not_text.message().contains("ASCII"), "{}", not_text.message());
    }

    #[test]
    fn denials_name_both_tiers() {
        assert_eq!(
            denial("vector search", Tier::Free, Some(Tier::Advanced)),
            "vector search needs the Advanced tier or higher; you are on the Free tier"
        );
        assert_eq!(
            denial("hybrid search", Tier::Free, None),
            "hybrid search is not available on any tier"
        );
    }
}
