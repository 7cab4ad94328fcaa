//! Access tokens (HS256 JWTs, algorithm pinned, iss/aud/exp/nbf checked) and
//! opaque refresh tokens (random, stored only as SHA-256 hashes).

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reporunner_proto::common::v1::Tier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    error::{AuthError, Result},
    tier::tier_name,
};

/// Clock skew tolerated on exp and nbf, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Random bytes in a refresh token.
pub const REFRESH_TOKEN_BYTES: usize = 32;

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    /// The tier when the token was issued (Authorize re-reads the user).
    pub tier: String,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// A unique token id.
    pub jti: String,
}

/// A signed access token and when it expires.
#[derive(Clone, Debug)]
pub struct IssuedAccessToken {
    pub token: String,
    pub claims: AccessClaims,
    /// Unix seconds.
    pub expires_at: u64,
}

/// A new refresh token: the secret for the client, the hash for the store.
#[derive(Clone, Debug)]
pub struct IssuedRefreshToken {
    pub token: String,
    pub hash: String,
}

/// Signs and checks access tokens with one HS256 key.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    access_ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl TokenIssuer {
    pub fn new(key: &[u8], issuer: &str, audience: &str, access_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            access_ttl,
        }
    }

    /// An access token for `user_id`, valid from now for the access TTL.
    pub fn issue(&self, user_id: &str, tier: Tier) -> Result<IssuedAccessToken> {
        self.issue_at(user_id, tier, unix_now())
    }

    fn issue_at(&self, user_id: &str, tier: Tier, now: u64) -> Result<IssuedAccessToken> {
        let exp = now + self.access_ttl.as_secs();
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            tier: tier_name(tier).to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(AuthError::Jwt)?;
        Ok(IssuedAccessToken {
            token,
            claims,
            expires_at: exp,
        })
    }

    /// The claims of a valid access token; anything else is `InvalidToken`.
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "access token refused");
                AuthError::InvalidToken
            })
    }
}

/// A new opaque refresh token (32 random bytes, base64url) and its hash.
pub fn new_refresh_token() -> IssuedRefreshToken {
    let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
    rand::fill(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    IssuedRefreshToken { token, hash }
}

/// The stored form of a refresh token: SHA-256, base64url.
pub fn hash_refresh_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-key";

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(KEY, "reporunner", "reporunner", Duration::from_secs(900))
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        let issued = issuer().issue("user-1", Tier::Premium).unwrap();
        let claims = issuer().verify(&issued.token).unwrap();
        assert_eq!(claims.sub, "user-1");
        assert_eq!(claims.tier, "premium");
        assert_eq!(claims.exp, claims.iat + 900);
        assert_eq!(claims.jti.len(), 32);
        assert_ne!(
            issuer().issue("user-1", Tier::Premium).unwrap().claims.jti,
            claims.jti
        );
    }

    #[test]
    fn a_tampered_signature_is_refused() {
        let token = issuer().issue("user-1", Tier::Free).unwrap().token;
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let mut sig = sig.to_owned().into_bytes();
        sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{rest}.{}", String::from_utf8(sig).unwrap());
        assert!(matches!(issuer().verify(&tampered), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let token = issuer().issue("user-1", Tier::Free).unwrap().token;
        let parts: Vec<_> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["tier"] = "admin".into();
        let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
        assert!(matches!(issuer().verify(&forged), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let other = TokenIssuer::new(
            b"another key of sufficient length, 32+",
            "reporunner",
            "reporunner",
            Duration::from_secs(900),
        );
        let token = other.issue("user-1", Tier::Free).unwrap().token;
        assert!(matches!(issuer().verify(&token), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let long_ago = unix_now() - 900 - LEEWAY_SECS - 60;
        let token = issuer().issue_at("user-1", Tier::Free, long_ago).unwrap().token;
        assert!(matches!(issuer().verify(&token), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn a_token_not_yet_valid_is_refused() {
        let later = unix_now() + 600;
        let token = issuer().issue_at("user-1", Tier::Free, later).unwrap().token;
        assert!(matches!(issuer().verify(&token), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn alg_none_is_refused() {
        let now = unix_now();
        let claims = serde_json::json!({
            "sub": "user-1", "tier": "admin", "iss": "reporunner", "aud": "reporunner",
            "iat": now, "nbf": now, "exp": now + 900, "jti": "x",
        });
        for header in [
            serde_json::json!({"alg": "none"}),
            serde_json::json!({"alg": "none", "typ": "JWT"}),
            serde_json::json!({"alg": "HS512", "typ": "JWT"}),
        ] {
            let token = format!("{}.{}.", b64(&header), b64(&claims));
            assert!(
                matches!(issuer().verify(&token), Err(AuthError::InvalidToken)),
                "{header}"
            );
        }
    }

    #[test]
    fn wrong_audience_or_issuer_is_refused() {
        let other_aud = TokenIssuer::new(KEY, "reporunner", "someone-else", Duration::from_secs(900));
        let token = other_aud.issue("user-1", Tier::Free).unwrap().token;
        assert!(matches!(issuer().verify(&token), Err(AuthError::InvalidToken)));
        let other_iss = TokenIssuer::new(KEY, "evil", "reporunner", Duration::from_secs(900));
        let token = other_iss.issue("user-1", Tier::Free).unwrap().token;
        assert!(matches!(issuer().verify(&token), Err(AuthError::InvalidToken)));
    }

    #[test]
    fn garbage_is_refused() {
        for token in ["", "a.b.c", "not a token", "..."] {
            assert!(
                matches!(issuer().verify(token), Err(AuthError::InvalidToken)),
                "{token}"
            );
        }
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let a = new_refresh_token();
        let b = new_refresh_token();
        assert_ne!(a.token, b.token);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&a.token).unwrap().len(),
            REFRESH_TOKEN_BYTES
        );
        assert_eq!(a.hash, hash_refresh_token(&a.token));
        assert_ne!(a.hash, a.token);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.hash).unwrap().len(), 32);
    }
}
