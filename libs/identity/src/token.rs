//! Service tokens: minted and cached by callers, verified by agents.

use std::{
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{AUDIENCE, ISSUER, IdentityError, MeshKey};

/// How long a service token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(300);
/// A cached token is replaced when less than this is left of it, so a call
/// never leaves with a token about to expire.
const REMINT_BEFORE: Duration = Duration::from_secs(60);
/// Clock skew tolerated between services.
const LEEWAY_SECS: u64 = 30;

/// The claims of a service token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceClaims {
    pub iss: String,
    pub aud: String,
    /// The calling service, e.g. `orchestrator`.
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Mints one calling service's tokens, and keeps the current one.
pub struct ServiceTokenSource {
    service: String,
    encoding: EncodingKey,
    current: Mutex<Option<(String, u64)>>,
}

impl std::fmt::Debug for ServiceTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceTokenSource")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceTokenSource {
    /// Tokens saying the caller is `service`, signed with `key`.
    pub fn new(key: &MeshKey, service: &str) -> Self {
        Self {
            service: service.to_owned(),
            encoding: EncodingKey::from_secret(key.bytes()),
            current: Mutex::new(None),
        }
    }

    /// The calling service these tokens name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A token valid for at least another minute: the cached one, or a new one.
    pub fn token(&self) -> Result<String, IdentityError> {
        let now = unix_now();
        if let Ok(current) = self.current.lock()
            && let Some((token, exp)) = current.as_ref()
            && *exp > now + REMINT_BEFORE.as_secs()
        {
            return Ok(token.clone());
        }
        let token = self.mint_at(now, TOKEN_TTL)?;
        if let Ok(mut current) = self.current.lock() {
            *current = Some((token.clone(), now + TOKEN_TTL.as_secs()));
        }
        Ok(token)
    }

    /// A new token issued at `issued_at` (unix seconds) and valid for `ttl`;
    /// tests use it to make expired ones.
    pub fn mint_at(&self, issued_at: u64, ttl: Duration) -> Result<String, IdentityError> {
        let claims = ServiceClaims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: self.service.clone(),
            iat: issued_at,
            nbf: issued_at,
            exp: issued_at + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(IdentityError::Sign)
    }
}

/// Checks service tokens against one key.
pub(crate) struct Verifier {
    decoding: DecodingKey,
    validation: Validation,
}

impl Verifier {
    pub(crate) fn new(key: &MeshKey) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            decoding: DecodingKey::from_secret(key.bytes()),
            validation,
        }
    }

    /// The calling service named by a valid token.
    pub(crate) fn verify(&self, token: &str) -> Option<String> {
        match jsonwebtoken::decode::<ServiceClaims>(token, &self.decoding, &self.validation) {
            Ok(data) if !data.claims.sub.is_empty() => Some(data.claims.sub),
            Ok(_) => None,
            Err(err) => {
                tracing::debug!(error = %err, "service token refused");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_cached_verified_and_refused_when_expired_or_foreign() {
        let key = MeshKey::generate();
        let source = ServiceTokenSource::new(&key, "orchestrator");
        let token = source.token().unwrap();
        assert_eq!(source.token().unwrap(), token, "cached while fresh");
        let verifier = Verifier::new(&key);
        assert_eq!(verifier.verify(&token).as_deref(), Some("orchestrator"));

        let expired = source.mint_at(unix_now() - 3600, TOKEN_TTL).unwrap();
        assert_eq!(verifier.verify(&expired), None);
        let foreign = ServiceTokenSource::new(&MeshKey::generate(), "orchestrator")
            .token()
            .unwrap();
        assert_eq!(verifier.verify(&foreign), None);
        assert_eq!(verifier.verify("not a token"), None);

        // A token about to expire is replaced.
        if let Ok(mut current) = source.current.lock() {
            *current = Some((expired.clone(), unix_now() + 10));
        }
        let fresh = source.token().unwrap();
        assert_ne!(fresh, expired);
        assert_eq!(verifier.verify(&fresh).as_deref(), Some("orchestrator"));
    }
}
