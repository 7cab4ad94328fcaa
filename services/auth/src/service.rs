//! The auth service's use cases on top of the store, the hasher and the
//! token issuer. The gRPC adapter (`crate::grpc`) only converts messages.

use std::{net::IpAddr, time::Duration};

use reporunner_proto::{
    auth::v1::UsageKind,
    common::v1::{Principal, Tier},
};

use crate::{
    AuthConfig, AuthError, AuthStore, NewUser, PasswordHasher, RegistrationMode, Result, TierPolicyConfig,
    TokenIssuer, UserRecord,
    cache::{Cached, UserCache},
    check_password_policy, now_ms,
    store::{AuditEntry, AuditRecord, LoginReservation, QuotaOutcome, UsageCount},
    throttle::{KeyedPermits, address_key},
    tier::tier_name,
    token::{IssuedAccessToken, hash_refresh_token, new_refresh_token},
};

/// The rolling window of rate limits and login failures.
pub const HOUR: Duration = Duration::from_secs(3600);
/// The shortest username, in characters.
pub const MIN_USERNAME_CHARS: usize = 3;
/// The longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;

/// An access token and a refresh token, as handed to a client.
#[derive(Clone, Debug)]
pub struct IssuedTokens {
    pub access: IssuedAccessToken,
    /// The opaque refresh secret (only its hash is stored).
    pub refresh_token: String,
    /// Unix milliseconds.
    pub refresh_expires_at_ms: i64,
}

/// Usage of one user, as reported by [`Auth::get_usage`].
#[derive(Clone, Debug)]
pub struct UsageReport {
    pub user_id: String,
    pub counters: Vec<UsageCount>,
    pub metered_limit_per_hour: u32,
    pub metered_remaining: u32,
}

/// The auth service's domain: users, tokens, tiers, quota, usage and audit.
#[derive(Debug)]
pub struct Auth {
    store: AuthStore,
    hasher: PasswordHasher,
    tokens: TokenIssuer,
    config: AuthConfig,
    /// A hash of a random password, verified against for unknown users so
    /// that they take as long as a wrong password (no user enumeration).
    dummy_hash: String,
    /// Password checks running per username (`login_concurrent_checks_per_account`).
    checks_per_account: KeyedPermits,
    /// What Authorize read of each user, for `authorize_cache_ttl`.
    users: UserCache,
}

/// Checks a username: 3 to 64 characters of `[A-Za-z0-9_.-]`.
pub fn validate_username(username: &str) -> Result<()> {
    let chars = username.chars().count();
    if !(MIN_USERNAME_CHARS..=MAX_USERNAME_CHARS).contains(&chars) {
        return Err(AuthError::InvalidArgument(format!(
            "a username has {MIN_USERNAME_CHARS} to {MAX_USERNAME_CHARS} characters; this one has {chars}"
        )));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(AuthError::InvalidArgument(
            "a username may hold the letters A-Z and a-z, digits and _ . - only".into(),
        ));
    }
    Ok(())
}

impl Auth {
    /// Builds the service over a migrated store. `signing_key` is the HS256
    /// key (see [`AuthConfig::signing_key`]).
    pub async fn new(store: AuthStore, config: AuthConfig, signing_key: &[u8]) -> Result<Self> {
        config.validate()?;
        crate::metrics::describe();
        let hasher = PasswordHasher::new(config.max_concurrent_hashes);
        let tokens = TokenIssuer::new(
            signing_key,
            &config.jwt_issuer,
            &config.jwt_audience,
            config.access_ttl(),
        );
        let dummy_hash = hasher.hash(&new_refresh_token().token).await?;
        let checks_per_account = KeyedPermits::new(config.login_concurrent_checks_per_account);
        let users = UserCache::new(config.authorize_cache_ttl, config.authorize_cache_users);
        Ok(Self {
            store,
            hasher,
            tokens,
            config,
            dummy_hash,
            checks_per_account,
            users,
        })
    }

    pub fn store(&self) -> &AuthStore {
        &self.store
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Passwords verified since start (Login's checks, the ones throttling
    /// bounds); exported as `reporunner_auth_password_checks_total`.
    pub fn password_checks(&self) -> u64 {
        self.hasher.verifications()
    }

    /// The policy of `tier`.
    pub fn policy(&self, tier: Tier) -> Result<&TierPolicyConfig> {
        self.config
            .policy(tier)
            .ok_or_else(|| AuthError::InvalidConfig(format!("no policy for tier {}", tier_name(tier))))
    }

    async fn audit(
        &self,
        actor: Option<&str>,
        target: Option<&str>,
        action: &str,
        detail: String,
    ) -> Result<()> {
        self.store
            .record_audit(AuditEntry {
                actor_id: actor.map(str::to_owned),
                target_id: target.map(str::to_owned),
                action: action.to_owned(),
                detail,
            })
            .await?;
        Ok(())
    }

    async fn new_user(&self, username: &str, password: &str, tier: Tier) -> Result<UserRecord> {
        let username = username.trim();
        validate_username(username)?;
        check_password_policy(username, password)?;
        let password_hash = self.hasher.hash(password).await?;
        self.store
            .create_user(NewUser {
                username: username.to_owned(),
                password_hash,
                tier,
            })
            .await
    }

    /// Creates a Free user for a client at `address` (`None`: unknown, one
    /// shared bucket), unless registration is closed or the address made
    /// `registrations_per_address_per_hour` attempts in the last hour. The
    /// name and password are checked before the attempt counts.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<UserRecord> {
        if self.config.registration == RegistrationMode::Closed {
            return Err(AuthError::PermissionDenied(
                "registration is closed on this server; ask the admin".into(),
            ));
        }
        let username = username.trim();
        validate_username(username)?;
        check_password_policy(username, password)?;
        let address = address_key(address);
        let limit = self.config.registrations_per_address_per_hour;
        if let Some(retry_after) = self
            .store
            .reserve_registration(&address, username, limit, HOUR)
            .await?
        {
            tracing::warn!(%address, "registration refused: too many from this address");
            crate::metrics::throttled("registration_address_limit");
            return Err(AuthError::LimitReached {
                what: "registrations from this address",
                limit,
                retry_after,
            });
        }
        let user = self.new_user(username, password, Tier::Free).await?;
        self.audit(Some(&user.id), Some(&user.id), "user.registered", String::new())
            .await?;
        Ok(user)
    }

    async fn issue_tokens(&self, user: &UserRecord) -> Result<IssuedTokens> {
        let access = self.tokens.issue(&user.id, user.tier)?;
        let refresh = new_refresh_token();
        let ttl_ms = i64::try_from(self.config.refresh_ttl().as_millis()).unwrap_or(i64::MAX);
        let refresh_expires_at_ms = now_ms().saturating_add(ttl_ms);
        self.store
            .store_refresh_token(&user.id, &refresh.hash, refresh_expires_at_ms)
            .await?;
        Ok(IssuedTokens {
            access,
            refresh_token: refresh.token,
            refresh_expires_at_ms,
        })
    }

    /// Checks a username and password from a client at `address` (`None`:
    /// unknown, one shared bucket) and issues tokens. A wrong password and an
    /// unknown user are the same [`AuthError::BadCredentials`].
    ///
    /// Throttling never locks the owner out: the attempt is reserved in the
    /// store before the password is checked, and refused only for this
    /// address, when it made `login_failures_per_address_per_hour` failed
    /// logins, or when this account failed from this address less than the
    /// growing delay ago. The same account from another address is checked.
    /// At most `login_concurrent_checks_per_account` checks of one account
    /// run at once; the others wait their turn.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        address: Option<IpAddr>,
    ) -> Result<(UserRecord, IssuedTokens)> {
        let username = username.trim();
        let address = address_key(address);
        let reservation = self
            .store
            .reserve_login_attempt(
                username,
                &address,
                self.config.login_failures_per_address_per_hour,
                HOUR,
                |failures| self.config.login_delay(failures),
            )
            .await?;
        let attempt = match reservation {
            LoginReservation::Reserved { id } => id,
            LoginReservation::AddressLimit { retry_after } => {
                crate::metrics::throttled("login_address_limit");
                tracing::warn!(%username, %address, "login refused: too many failures from this address");
                return Err(AuthError::LimitReached {
                    what: "failed logins from this address",
                    limit: self.config.login_failures_per_address_per_hour,
                    retry_after,
                });
            }
            LoginReservation::TooSoon { retry_after } => {
                crate::metrics::throttled("login_too_soon");
                tracing::info!(%username, %address, "login refused: retried too soon after a failure");
                return Err(AuthError::RetryTooSoon { retry_after });
            }
        };
        let user = self.store.find_user_by_username(username).await?;
        let hash = user
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let matches = {
            let _permit = self.checks_per_account.acquire(username).await;
            self.hasher.verify(password, hash).await?
        };
        crate::metrics::password_checked(matches);
        let user = match user {
            Some(user) if matches => user,
            user => {
                let user_id = user.as_ref().map(|u| u.id.as_str());
                if let Some(user_id) = user_id {
                    self.store.set_login_failure_user(&attempt, user_id).await?;
                }
                self.audit(
                    None,
                    user_id,
                    "login.failed",
                    format!("username `{username}` from {address}"),
                )
                .await?;
                return Err(AuthError::BadCredentials);
            }
        };
        self.store.clear_login_failures_from(username, &address).await?;
        if user.blocked {
            return Err(AuthError::Blocked);
        }
        let tokens = self.issue_tokens(&user).await?;
        Ok((user, tokens))
    }

    /// The embedded single-user principal: the owner of this machine, who
    /// already holds the data directory, gets tokens without a password.
    /// `username` is created on first use with a random password nobody
    /// knows, as the admin when there is none yet (else Premium). This is a
    /// library call for `reporunner run` in one process; no RPC reaches it.
    pub async fn local_session(&self, username: &str) -> Result<(UserRecord, IssuedTokens)> {
        let username = username.trim();
        validate_username(username)?;
        let user = match self.store.find_user_by_username(username).await? {
            Some(user) => user,
            None => {
                let tier = if self.store.find_admin().await?.is_none() {
                    Tier::Admin
                } else {
                    Tier::Premium
                };
                let password_hash = self.hasher.hash(&new_refresh_token().token).await?;
                let created = self
                    .store
                    .create_user(NewUser {
                        username: username.to_owned(),
                        password_hash,
                        tier,
                    })
                    .await;
                match created {
                    Ok(user) => {
                        self.audit(Some(&user.id), Some(&user.id), "local.created", String::new())
                            .await?;
                        user
                    }
                    // Another process created it at the same moment.
                    Err(err) => self.store.find_user_by_username(username).await?.ok_or(err)?,
                }
            }
        };
        if user.blocked {
            return Err(AuthError::Blocked);
        }
        let tokens = self.issue_tokens(&user).await?;
        Ok((user, tokens))
    }

    /// Spends a refresh token and issues a new pair (reuse of a spent token
    /// revokes all of the user's tokens; the store does that).
    pub async fn refresh(&self, refresh_token: &str) -> Result<IssuedTokens> {
        let new = new_refresh_token();
        let ttl_ms = i64::try_from(self.config.refresh_ttl().as_millis()).unwrap_or(i64::MAX);
        let refresh_expires_at_ms = now_ms().saturating_add(ttl_ms);
        let record = self
            .store
            .rotate_refresh_token(
                &hash_refresh_token(refresh_token),
                &new.hash,
                refresh_expires_at_ms,
            )
            .await?;
        let user = self
            .store
            .find_user(&record.user_id)
            .await?
            .ok_or(AuthError::InvalidToken)?;
        if user.blocked {
            self.store.revoke_all_refresh_tokens(&user.id).await?;
            return Err(AuthError::Blocked);
        }
        let access = self.tokens.issue(&user.id, user.tier)?;
        Ok(IssuedTokens {
            access,
            refresh_token: new.token,
            refresh_expires_at_ms,
        })
    }

    /// Revokes one of the caller's refresh tokens, or all of them. Someone
    /// else's token is left alone (and not reported, to leak nothing).
    pub async fn logout(&self, caller: &Principal, refresh_token: &str, all: bool) -> Result<()> {
        if all {
            self.store.revoke_all_refresh_tokens(&caller.user_id).await?;
            return Ok(());
        }
        if refresh_token.is_empty() {
            return Err(AuthError::InvalidArgument(
                "name the refresh token to revoke, or set `all`".into(),
            ));
        }
        let hash = hash_refresh_token(refresh_token);
        if let Some(token) = self.store.find_refresh_token(&hash).await?
            && token.user_id == caller.user_id
        {
            self.store.revoke_refresh_token(&hash).await?;
        }
        Ok(())
    }

    /// Checks an access token and re-reads its user, so that a block, a
    /// deletion or a tier change takes effect on the very next call.
    pub async fn authorize(&self, access_token: &str) -> Result<(Principal, TierPolicyConfig)> {
        let claims = self.tokens.verify(access_token)?;
        let user = match self.users.get(&claims.sub) {
            Some(user) => user,
            None => {
                let seen = self.users.generation();
                let record = self
                    .store
                    .find_user(&claims.sub)
                    .await?
                    .ok_or(AuthError::InvalidToken)?;
                let user = Cached {
                    principal: record.principal(),
                    tier: record.tier,
                    blocked: record.blocked,
                };
                self.users.put(&claims.sub, user.clone(), seen);
                user
            }
        };
        if user.blocked {
            return Err(AuthError::Blocked);
        }
        let policy = self.policy(user.tier)?.clone();
        Ok((user.principal, policy))
    }

    /// The current record of the caller.
    pub async fn whoami(&self, caller: &Principal) -> Result<UserRecord> {
        self.store
            .find_user(&caller.user_id)
            .await?
            .ok_or(AuthError::InvalidToken)
    }

    /// Consumes one unit of `kind` for `user_id`. Metered requests are
    /// limited by the user's tier; other kinds are only counted.
    pub async fn consume_quota(&self, user_id: &str, kind: UsageKind, rpc: &str) -> Result<QuotaOutcome> {
        let user = self
            .store
            .find_user(user_id)
            .await?
            .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
        if user.blocked {
            return Err(AuthError::Blocked);
        }
        let limit = match kind {
            UsageKind::MeteredRequest => self.policy(user.tier)?.metered_requests_per_hour,
            UsageKind::Unspecified => return Err(AuthError::InvalidArgument("name a usage kind".into())),
            UsageKind::RunCreated | UsageKind::AgentCall | UsageKind::Search | UsageKind::Index => u32::MAX,
        };
        let outcome = self.store.consume_quota(&user.id, kind, rpc, limit, HOUR).await?;
        if !outcome.allowed {
            return Err(AuthError::LimitReached {
                what: "metered requests",
                limit,
                retry_after: outcome.retry_after.unwrap_or(Duration::from_secs(1)),
            });
        }
        Ok(outcome)
    }

    /// Usage of `user_id` (empty: the caller). Only the admin may read
    /// someone else's.
    pub async fn get_usage(&self, caller: &Principal, user_id: &str) -> Result<UsageReport> {
        let user_id = if user_id.is_empty() {
            caller.user_id.as_str()
        } else {
            user_id
        };
        if user_id != caller.user_id && caller.tier() != Tier::Admin {
            return Err(AuthError::PermissionDenied(
                "only the admin may read another user's usage".into(),
            ));
        }
        let user = self
            .store
            .find_user(user_id)
            .await?
            .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
        let counters = self.store.usage(&user.id, HOUR).await?;
        let limit = self.policy(user.tier)?.metered_requests_per_hour;
        let used = counters
            .iter()
            .find(|c| c.kind == UsageKind::MeteredRequest)
            .map_or(0, |c| c.last_window);
        let remaining = u32::try_from(u64::from(limit).saturating_sub(used)).unwrap_or(0);
        Ok(UsageReport {
            user_id: user.id,
            counters,
            metered_limit_per_hour: limit,
            metered_remaining: remaining,
        })
    }

    // ---- the admin ----

    /// Refuses anyone but the admin (checked against the database).
    async fn ensure_caller_is_admin(&self, caller: &Principal) -> Result<()> {
        let user = self.store.find_user(&caller.user_id).await?;
        match user {
            Some(user) if user.is_admin() && !user.blocked => Ok(()),
            _ => Err(AuthError::PermissionDenied(
                "only the admin may manage users".into(),
            )),
        }
    }

    /// Whether `user_id` is an embedded local owner ([`Auth::local_session`]
    /// made it): its creation is in the audit log as `local.created`.
    pub async fn is_local_owner(&self, user_id: &str) -> Result<bool> {
        let mut page = String::new();
        // Bounded: the creation is the oldest event about the user.
        for _ in 0..1_000 {
            let (events, next) = self.store.list_audit_events(Some(user_id), 500, &page).await?;
            if events.iter().any(|e| e.action == "local.created") {
                return Ok(true);
            }
            if next.is_empty() {
                break;
            }
            page = next;
        }
        Ok(false)
    }

    /// Creates the single admin on first start; a no-op when this admin
    /// exists already; [`AuthError::AdminExists`] when another one does.
    /// An embedded local owner that holds the admin tier (a data directory
    /// used with `reporunner run` before any admin was made) steps down to
    /// Premium: the new admin takes over, audited as `admin.takeover`.
    /// The password is never logged.
    pub async fn ensure_admin(&self, username: &str, password: &str) -> Result<UserRecord> {
        let username = username.trim();
        let local_owner = match self.store.find_admin().await? {
            Some(admin) if admin.username == username => return Ok(admin),
            // The embedded local owner holds the admin tier until a real
            // admin is made: it steps down to Premium (below).
            Some(admin) if self.is_local_owner(&admin.id).await? => Some(admin),
            Some(_) => return Err(AuthError::AdminExists),
            None => None,
        };
        let admin = match &local_owner {
            Some(local) => {
                validate_username(username)?;
                check_password_policy(username, password)?;
                let password_hash = self.hasher.hash(password).await?;
                let admin = self
                    .store
                    .hand_over_admin(
                        &local.id,
                        NewUser {
                            username: username.to_owned(),
                            password_hash,
                            tier: Tier::Admin,
                        },
                    )
                    .await?;
                self.users.evict(&local.id);
                admin
            }
            None => self.new_user(username, password, Tier::Admin).await?,
        };
        self.audit(Some(&admin.id), Some(&admin.id), "admin.created", String::new())
            .await?;
        if let Some(local) = &local_owner {
            self.audit(
                Some(&admin.id),
                Some(&local.id),
                "admin.takeover",
                format!(
                    "`{}` is the admin now; the local owner `{}` is premium",
                    admin.username, local.username
                ),
            )
            .await?;
            tracing::info!(admin = %admin.username, local = %local.username, "the admin took over from the local owner");
        }
        tracing::info!(username = %admin.username, "created the admin");
        Ok(admin)
    }

    /// Creates a user of any tier but admin (unspecified means Free).
    pub async fn create_user(
        &self,
        caller: &Principal,
        username: &str,
        password: &str,
        tier: Tier,
    ) -> Result<UserRecord> {
        self.ensure_caller_is_admin(caller).await?;
        let tier = match tier {
            Tier::Admin => return Err(AuthError::AdminExists),
            Tier::Unspecified => Tier::Free,
            tier @ (Tier::Free | Tier::Tester | Tier::Advanced | Tier::Premium) => tier,
        };
        let user = self.new_user(username, password, tier).await?;
        self.audit(
            Some(&caller.user_id),
            Some(&user.id),
            "user.created",
            format!("`{}` as {}", user.username, tier_name(tier)),
        )
        .await?;
        Ok(user)
    }

    pub async fn list_users(
        &self,
        caller: &Principal,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<UserRecord>, String)> {
        self.ensure_caller_is_admin(caller).await?;
        self.store.list_users(page_size, page_token).await
    }

    /// Blocks a user and revokes their refresh tokens; their access tokens
    /// are refused from the next call on.
    pub async fn block_user(&self, caller: &Principal, user_id: &str, reason: &str) -> Result<UserRecord> {
        self.ensure_caller_is_admin(caller).await?;
        let user = self.store.set_blocked(user_id, true).await?;
        self.users.evict(user_id);
        self.store.revoke_all_refresh_tokens(user_id).await?;
        self.audit(
            Some(&caller.user_id),
            Some(user_id),
            "user.blocked",
            reason.to_owned(),
        )
        .await?;
        Ok(user)
    }

    pub async fn unblock_user(&self, caller: &Principal, user_id: &str) -> Result<UserRecord> {
        self.ensure_caller_is_admin(caller).await?;
        let user = self.store.set_blocked(user_id, false).await?;
        self.users.evict(user_id);
        self.audit(
            Some(&caller.user_id),
            Some(user_id),
            "user.unblocked",
            String::new(),
        )
        .await?;
        Ok(user)
    }

    pub async fn delete_user(&self, caller: &Principal, user_id: &str) -> Result<()> {
        self.ensure_caller_is_admin(caller).await?;
        let user = self
            .store
            .find_user(user_id)
            .await?
            .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
        self.store.delete_user(user_id).await?;
        self.users.evict(user_id);
        self.audit(
            Some(&caller.user_id),
            Some(user_id),
            "user.deleted",
            format!("`{}`", user.username),
        )
        .await
    }

    /// Upgrades or downgrades a user (never to or from admin).
    pub async fn set_tier(&self, caller: &Principal, user_id: &str, tier: Tier) -> Result<UserRecord> {
        self.ensure_caller_is_admin(caller).await?;
        let before = self
            .store
            .find_user(user_id)
            .await?
            .ok_or_else(|| AuthError::UserNotFound(user_id.to_owned()))?;
        let user = self.store.set_tier(user_id, tier).await?;
        self.users.evict(user_id);
        self.audit(
            Some(&caller.user_id),
            Some(user_id),
            "tier.changed",
            format!("{} -> {}", tier_name(before.tier), tier_name(user.tier)),
        )
        .await?;
        Ok(user)
    }

    pub async fn list_audit_events(
        &self,
        caller: &Principal,
        target_id: Option<&str>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditRecord>, String)> {
        self.ensure_caller_is_admin(caller).await?;
        self.store
            .list_audit_events(target_id, page_size, page_token)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("a.b-c_9").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username(&"a".repeat(65)).is_err());
        assert!(validate_username(&"a".repeat(64)).is_ok());
        assert!(validate_username("al ice").is_err());
        assert!(validate_username("alice@x").is_err());
        assert!(validate_username("älice").is_err());
    }
}
