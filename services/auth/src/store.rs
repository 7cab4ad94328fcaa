//! Persistent state of the auth service through sea-orm: users, refresh
//! tokens, quota events, login failures and the audit log. The same code runs
//! on SQLite (the embedded default) and PostgreSQL (shared deployments).

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use reporunner_db::Db;
use reporunner_proto::{
    auth::v1::UsageKind,
    common::v1::{Principal, Tier},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement, TransactionTrait, sea_query::Expr,
};
use sea_orm_migration::MigratorTrait;

use crate::{
    entity::{audit_events, login_failures, quota_events, refresh_tokens, registration_attempts, users},
    error::{AuthError, Result},
    migration::Migrator,
    now_ms,
    tier::{parse_tier, parse_usage_kind, tier_name, usage_kind_name},
};

/// The most rows one page of a listing holds.
pub const MAX_PAGE_SIZE: u32 = 1_000;
/// The page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The longest username accepted, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub tier: Tier,
    pub blocked: bool,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl UserRecord {
    pub fn is_admin(&self) -> bool {
        self.tier == Tier::Admin
    }

    /// The user as the principal other services see.
    pub fn principal(&self) -> Principal {
        Principal {
            user_id: self.id.clone(),
            username: self.username.clone(),
            tier: self.tier.into(),
        }
    }
}

impl TryFrom<users::Model> for UserRecord {
    type Error = AuthError;

    fn try_from(m: users::Model) -> Result<Self> {
        let tier = parse_tier(&m.tier).ok_or_else(|| {
            AuthError::Db(DbErr::Custom(format!(
                "user {} has unknown tier `{}`",
                m.id, m.tier
            )))
        })?;
        Ok(Self {
            id: m.id,
            username: m.username,
            password_hash: m.password_hash,
            tier,
            blocked: m.blocked,
            created_at_ms: m.created_at,
            updated_at_ms: m.updated_at,
        })
    }
}

/// A user to create. The password must be hashed already.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username: String,
    pub password_hash: String,
    pub tier: Tier,
}

/// A stored refresh token (the secret itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub id: String,
    pub user_id: String,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    pub replaced_by: Option<String>,
}

impl From<refresh_tokens::Model> for RefreshTokenRecord {
    fn from(m: refresh_tokens::Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            expires_at_ms: m.expires_at,
            revoked_at_ms: m.revoked_at,
            replaced_by: m.replaced_by,
        }
    }
}

/// An audit event to record.
#[derive(Clone, Debug, Default)]
pub struct AuditEntry {
    /// Who acted; `None` for anonymous events (a failed login).
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    /// e.g. "user.blocked", "login.failed", "tier.changed".
    pub action: String,
    pub detail: String,
}

/// A recorded audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: String,
    pub at_ms: i64,
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    pub action: String,
    pub detail: String,
}

/// The answer of [`AuthStore::consume_quota`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaOutcome {
    /// Whether the unit was consumed (and recorded).
    pub allowed: bool,
    pub limit: u32,
    /// Units left in the window after this call.
    pub remaining: u32,
    /// When refused: how long until the oldest counted event leaves the window.
    pub retry_after: Option<Duration>,
    /// When the oldest counted event leaves the window (Unix milliseconds).
    pub resets_at_ms: i64,
}

/// The answer of [`AuthStore::reserve_login_attempt`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginReservation {
    /// The attempt is recorded as a failure (row `id`) before the password is
    /// checked; a success settles it with [`AuthStore::clear_login_failures_from`].
    Reserved { id: String },
    /// The address made the most failed logins the window allows.
    AddressLimit { retry_after: Duration },
    /// This account failed from this address too recently to be tried again.
    TooSoon { retry_after: Duration },
}

/// Usage of one kind by one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageCount {
    pub kind: UsageKind,
    pub last_window: u64,
    pub total: u64,
}

/// The auth service's database.
#[derive(Clone, Debug)]
pub struct AuthStore {
    db: Db,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

fn page_size(requested: u32) -> u64 {
    u64::from(match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    })
}

fn encode_page_token(prefix: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{prefix}:{key}"))
}

fn decode_page_token(prefix: &str, token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| AuthError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| AuthError::InvalidPageToken)?;
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(|key| Some(key.to_owned()))
        .ok_or(AuthError::InvalidPageToken)
}

fn is_unique_violation(err: &DbErr) -> Option<String> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}

impl AuthStore {
    /// Connects to `url` (`sqlite://...?mode=rwc` or `postgres://...`) and
    /// brings the schema up to date.
    ///
    /// A SQLite file is created with mode 0600 (and an existing one and its
    /// `-wal`/`-shm` tightened to 0600) before it is opened.
    pub async fn connect(url: &str) -> Result<Self> {
        let io_err = |source| AuthError::Io {
            path: crate::files::sqlite_path(url).unwrap_or_default(),
            source,
        };
        crate::files::prepare_private_sqlite(url).map_err(io_err)?;
        let db = Db::connect(url).await?;
        let store = Self { db };
        store.migrate().await?;
        if let Some(path) = crate::files::sqlite_path(url) {
            crate::files::tighten_sqlite(&path).map_err(io_err)?;
        }
        Ok(store)
    }

    /// Wraps an open connection; call [`AuthStore::migrate`] before use.
    pub fn from_connection(db: DatabaseConnection) -> Self {
        Self {
            db: Db::from_connection(db),
        }
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(self.db.write(), None).await?;
        Ok(())
    }

    /// The database, where it reads and where it writes.
    pub fn db(&self) -> &Db {
        &self.db
    }

    // ---- users ----

    /// Creates a user. An admin is refused with [`AuthError::AdminExists`] when
    /// one exists (a unique index guarantees it, also across replicas).
    pub async fn create_user(&self, new: NewUser) -> Result<UserRecord> {
        let username = new.username.trim().to_owned();
        validate_username(&username)?;
        if new.tier == Tier::Unspecified {
            return Err(AuthError::InvalidArgument("a user needs a tier".into()));
        }
        let now = now_ms();
        let model = users::ActiveModel {
            id: Set(new_id()),
            username: Set(username.clone()),
            password_hash: Set(new.password_hash),
            tier: Set(tier_name(new.tier).to_owned()),
            blocked: Set(false),
            admin_singleton: Set((new.tier == Tier::Admin).then_some(1)),
            created_at: Set(now),
            updated_at: Set(now),
        };
        match users::Entity::insert(model)
            .exec_with_returning(self.db.write())
            .await
        {
            Ok(m) => m.try_into(),
            Err(e) => match is_unique_violation(&e) {
                Some(msg) if msg.contains("admin_singleton") || msg.contains("users_one_admin") => {
                    Err(AuthError::AdminExists)
                }
                Some(_) => Err(AuthError::UsernameTaken(username)),
                None => Err(e.into()),
            },
        }
    }

    pub async fn find_user(&self, id: &str) -> Result<Option<UserRecord>> {
        users::Entity::find_by_id(id.to_owned())
            .one(self.db.read())
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    pub async fn find_user_by_username(&self, username: &str) -> Result<Option<UserRecord>> {
        users::Entity::find()
            .filter(users::Column::Username.eq(username.trim()))
            .one(self.db.read())
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    /// The admin, if one was created.
    pub async fn find_admin(&self) -> Result<Option<UserRecord>> {
        users::Entity::find()
            .filter(users::Column::AdminSingleton.eq(1))
            .one(self.db.read())
            .await?
            .map(TryInto::try_into)
            .transpose()
    }

    async fn require_user(&self, id: &str) -> Result<UserRecord> {
        self.find_user(id)
            .await?
            .ok_or_else(|| AuthError::UserNotFound(id.to_owned()))
    }

    /// Blocks or unblocks a user. The admin cannot be blocked.
    pub async fn set_blocked(&self, id: &str, blocked: bool) -> Result<UserRecord> {
        let user = self.require_user(id).await?;
        if user.is_admin() && blocked {
            return Err(AuthError::AdminProtected("blocked"));
        }
        users::Entity::update_many()
            .col_expr(users::Column::Blocked, Expr::value(blocked))
            .col_expr(users::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(users::Column::Id.eq(id))
            .exec(self.db.write())
            .await?;
        self.require_user(id).await
    }

    /// Changes a user's tier. The admin's tier is fixed, and no one else can
    /// become admin.
    pub async fn set_tier(&self, id: &str, tier: Tier) -> Result<UserRecord> {
        match tier {
            Tier::Unspecified => return Err(AuthError::InvalidArgument("name a tier".into())),
            Tier::Admin => {
                return Err(AuthError::InvalidArgument(
                    "the admin tier cannot be granted; there is exactly one admin".into(),
                ));
            }
            Tier::Free | Tier::Tester | Tier::Advanced | Tier::Premium => {}
        }
        let user = self.require_user(id).await?;
        if user.is_admin() {
            return Err(AuthError::AdminProtected("downgraded"));
        }
        users::Entity::update_many()
            .col_expr(users::Column::Tier, Expr::value(tier_name(tier)))
            .col_expr(users::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(users::Column::Id.eq(id))
            .filter(users::Column::AdminSingleton.is_null())
            .exec(self.db.write())
            .await?;
        self.require_user(id).await
    }

    /// Makes `new` the admin in place of the admin `from`, who becomes a
    /// Premium user, in one transaction: there is never no admin, and never
    /// two. Only for the embedded local owner stepping down (see
    /// `Auth::ensure_admin`).
    pub async fn hand_over_admin(&self, from: &str, new: NewUser) -> Result<UserRecord> {
        let username = new.username.trim().to_owned();
        validate_username(&username)?;
        let txn = self.db.write().begin().await?;
        let demoted = users::Entity::update_many()
            .col_expr(users::Column::Tier, Expr::value(tier_name(Tier::Premium)))
            .col_expr(users::Column::AdminSingleton, Expr::value(Option::<i32>::None))
            .col_expr(users::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(users::Column::Id.eq(from))
            .filter(users::Column::AdminSingleton.is_not_null())
            .exec(&txn)
            .await?;
        if demoted.rows_affected != 1 {
            return Err(AuthError::AdminExists);
        }
        let now = now_ms();
        let model = users::ActiveModel {
            id: Set(new_id()),
            username: Set(username.clone()),
            password_hash: Set(new.password_hash),
            tier: Set(tier_name(Tier::Admin).to_owned()),
            blocked: Set(false),
            admin_singleton: Set(Some(1)),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let created = match users::Entity::insert(model).exec_with_returning(&txn).await {
            Ok(m) => m,
            Err(e) => {
                return Err(match is_unique_violation(&e) {
                    Some(msg) if msg.contains("admin_singleton") || msg.contains("users_one_admin") => {
                        AuthError::AdminExists
                    }
                    Some(_) => AuthError::UsernameTaken(username),
                    None => e.into(),
                });
            }
        };
        txn.commit().await?;
        created.try_into()
    }

    /// Deletes a user with their refresh tokens and quota events (the audit
    /// log keeps its records). The admin cannot be deleted.
    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let user = self.require_user(id).await?;
        if user.is_admin() {
            return Err(AuthError::AdminProtected("deleted"));
        }
        let txn = self.db.write().begin().await?;
        refresh_tokens::Entity::delete_many()
            .filter(refresh_tokens::Column::UserId.eq(id))
            .exec(&txn)
            .await?;
        quota_events::Entity::delete_many()
            .filter(quota_events::Column::UserId.eq(id))
            .exec(&txn)
            .await?;
        let deleted = users::Entity::delete_many()
            .filter(users::Column::Id.eq(id))
            .filter(users::Column::AdminSingleton.is_null())
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(AuthError::UserNotFound(id.to_owned()));
        }
        txn.commit().await?;
        Ok(())
    }

    /// One page of users ordered by username; `page_token` is the previous
    /// page's `next_page_token` (empty for the first page). The returned
    /// token is empty on the last page.
    pub async fn list_users(
        &self,
        page_size_requested: u32,
        page_token: &str,
    ) -> Result<(Vec<UserRecord>, String)> {
        let size = page_size(page_size_requested);
        let after = decode_page_token("u", page_token)?;
        let mut query = users::Entity::find().order_by_asc(users::Column::Username);
        if let Some(after) = after {
            query = query.filter(users::Column::Username.gt(after));
        }
        let mut rows = query.limit(size + 1).all(self.db.read()).await?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next = match (more, rows.last()) {
            (true, Some(last)) => encode_page_token("u", &last.username),
            _ => String::new(),
        };
        let users = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<Vec<_>>>()?;
        Ok((users, next))
    }

    // ---- refresh tokens ----

    /// Stores the hash of a new refresh token; returns its id.
    pub async fn store_refresh_token(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at_ms: i64,
    ) -> Result<String> {
        let id = new_id();
        insert_refresh_token(self.db.write(), &id, user_id, token_hash, expires_at_ms).await?;
        Ok(id)
    }

    pub async fn find_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRecord>> {
        Ok(refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(token_hash))
            .one(self.db.read())
            .await?
            .map(Into::into))
    }

    /// Spends the refresh token with hash `old_hash` and stores `new_hash` in
    /// its place, atomically: of two concurrent rotations of one token, one
    /// wins. An unknown, expired or spent token is [`AuthError::InvalidToken`];
    /// a spent one being presented again revokes every token of its user
    /// (it was probably stolen). Returns the new token's record.
    pub async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires_at_ms: i64,
    ) -> Result<RefreshTokenRecord> {
        let now = now_ms();
        let Some(old) = self.find_refresh_token(old_hash).await? else {
            return Err(AuthError::InvalidToken);
        };
        if old.revoked_at_ms.is_some() {
            if old.replaced_by.is_some() {
                let revoked = self.revoke_all_refresh_tokens(&old.user_id).await?;
                tracing::warn!(user_id = %old.user_id, revoked, "spent refresh token reused; revoked all of the user's tokens");
            }
            return Err(AuthError::InvalidToken);
        }
        if old.expires_at_ms <= now {
            return Err(AuthError::InvalidToken);
        }
        let txn = self.db.write().begin().await?;
        let new_id = new_id();
        let spent = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now))
            .col_expr(refresh_tokens::Column::ReplacedBy, Expr::value(new_id.clone()))
            .filter(refresh_tokens::Column::Id.eq(old.id.as_str()))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if spent.rows_affected != 1 {
            txn.rollback().await?;
            return Err(AuthError::InvalidToken);
        }
        insert_refresh_token(&txn, &new_id, &old.user_id, new_hash, new_expires_at_ms).await?;
        txn.commit().await?;
        Ok(RefreshTokenRecord {
            id: new_id,
            user_id: old.user_id,
            expires_at_ms: new_expires_at_ms,
            revoked_at_ms: None,
            replaced_by: None,
        })
    }

    /// Revokes one refresh token; returns its user when it was live.
    pub async fn revoke_refresh_token(&self, token_hash: &str) -> Result<Option<String>> {
        let Some(token) = self.find_refresh_token(token_hash).await? else {
            return Ok(None);
        };
        let revoked = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now_ms()))
            .filter(refresh_tokens::Column::Id.eq(token.id.as_str()))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(self.db.write())
            .await?;
        Ok((revoked.rows_affected == 1).then_some(token.user_id))
    }

    /// Revokes every live refresh token of a user; returns how many.
    pub async fn revoke_all_refresh_tokens(&self, user_id: &str) -> Result<u64> {
        let revoked = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(now_ms()))
            .filter(refresh_tokens::Column::UserId.eq(user_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(self.db.write())
            .await?;
        Ok(revoked.rows_affected)
    }

    // ---- quota and usage ----

    /// Consumes one unit of `kind` for `user_id` if fewer than `limit` were
    /// consumed in the rolling `window`, and records it.
    ///
    /// Atomic across processes sharing one database: the transaction first
    /// locks the user's row (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite
    /// a write to the row takes the database's write lock up front), then
    /// counts and inserts. Concurrent calls for one user run one at a time.
    pub async fn consume_quota(
        &self,
        user_id: &str,
        kind: UsageKind,
        rpc: &str,
        limit: u32,
        window: Duration,
    ) -> Result<QuotaOutcome> {
        if kind == UsageKind::Unspecified {
            return Err(AuthError::InvalidArgument("name a usage kind".into()));
        }
        let window = window_ms(window);
        if self.db.write().get_database_backend() == DbBackend::Sqlite {
            return self.consume_quota_sqlite(user_id, kind, rpc, limit, window).await;
        }
        let txn = self.db.write().begin().await?;
        lock_user(&txn, user_id).await?;
        // Read the clock after the lock: waiting for it may take a while.
        let now = now_ms();
        let (count, oldest) = window_count(&txn, user_id, usage_kind_name(kind), now - window).await?;
        let resets_at_ms = oldest.unwrap_or(now).saturating_add(window);
        if count >= limit {
            txn.rollback().await?;
            let wait = u64::try_from(resets_at_ms - now).unwrap_or(0).max(1);
            return Ok(QuotaOutcome {
                allowed: false,
                limit,
                remaining: 0,
                retry_after: Some(Duration::from_millis(wait)),
                resets_at_ms,
            });
        }
        quota_events::Entity::insert(quota_events::ActiveModel {
            id: Set(new_id()),
            user_id: Set(user_id.to_owned()),
            kind: Set(usage_kind_name(kind).to_owned()),
            rpc: Set(rpc.to_owned()),
            at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(QuotaOutcome {
            allowed: true,
            limit,
            remaining: limit - count - 1,
            retry_after: None,
            resets_at_ms,
        })
    }

    /// [`consume_quota`](Self::consume_quota) on SQLite: the count and the
    /// insert are one statement, which SQLite runs under its write lock
    /// (taken before the statement reads), so it is atomic across
    /// connections and processes as the row lock is on PostgreSQL, and it
    /// holds the writer for one round trip instead of five. What is left
    /// and when the window resets are read after, from a reader.
    async fn consume_quota_sqlite(
        &self,
        user_id: &str,
        kind: UsageKind,
        rpc: &str,
        limit: u32,
        window: i64,
    ) -> Result<QuotaOutcome> {
        let kind = usage_kind_name(kind);
        let now = now_ms();
        let inserted = self
            .db
            .write()
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO quota_events (id, user_id, kind, rpc, at) \
                 SELECT ?, ?, ?, ?, ? \
                 WHERE EXISTS (SELECT 1 FROM users WHERE id = ?) \
                 AND (SELECT COUNT(*) FROM quota_events WHERE user_id = ? AND kind = ? AND at > ?) < ?",
                [
                    new_id().into(),
                    user_id.into(),
                    kind.into(),
                    rpc.into(),
                    now.into(),
                    user_id.into(),
                    user_id.into(),
                    kind.into(),
                    (now - window).into(),
                    i64::from(limit).into(),
                ],
            ))
            .await?
            .rows_affected()
            == 1;
        let (count, oldest) = window_count(self.db.read(), user_id, kind, now - window).await?;
        let resets_at_ms = oldest.unwrap_or(now).saturating_add(window);
        if inserted {
            return Ok(QuotaOutcome {
                allowed: true,
                limit,
                remaining: limit.saturating_sub(count),
                retry_after: None,
                resets_at_ms,
            });
        }
        if count < limit {
            // Not refused by the count: the user is not there.
            return Err(AuthError::UserNotFound(user_id.to_owned()));
        }
        let wait = u64::try_from(resets_at_ms - now_ms()).unwrap_or(0).max(1);
        Ok(QuotaOutcome {
            allowed: false,
            limit,
            remaining: 0,
            retry_after: Some(Duration::from_millis(wait)),
            resets_at_ms,
        })
    }

    /// Per kind: events in the rolling `window` and in total.
    pub async fn usage(&self, user_id: &str, window: Duration) -> Result<Vec<UsageCount>> {
        let since = now_ms() - window_ms(window);
        let rows = quota_events::Entity::find()
            .select_only()
            .column(quota_events::Column::Kind)
            .column_as(
                Expr::cust(format!("SUM(CASE WHEN at > {since} THEN 1 ELSE 0 END)")),
                "last_window",
            )
            .column_as(Expr::cust("COUNT(*)"), "total")
            .filter(quota_events::Column::UserId.eq(user_id))
            .group_by(quota_events::Column::Kind)
            .into_tuple::<(String, Option<i64>, i64)>()
            .all(self.db.read())
            .await?;
        let mut counts: Vec<UsageCount> = rows
            .into_iter()
            .filter_map(|(kind, last, total)| {
                Some(UsageCount {
                    kind: parse_usage_kind(&kind)?,
                    last_window: u64::try_from(last.unwrap_or(0)).unwrap_or(0),
                    total: u64::try_from(total).unwrap_or(0),
                })
            })
            .collect();
        counts.sort_by_key(|c| c.kind as i32);
        Ok(counts)
    }

    // ---- login failures ----

    /// Records a failed login against `username` (known or not) from
    /// `address` (see [`crate::throttle::address_key`]).
    pub async fn record_login_failure(
        &self,
        username: &str,
        user_id: Option<&str>,
        address: &str,
    ) -> Result<()> {
        login_failures::Entity::insert(login_failures::ActiveModel {
            id: Set(new_id()),
            username: Set(username.trim().to_owned()),
            user_id: Set(user_id.map(str::to_owned)),
            at: Set(now_ms()),
            address: Set(Some(address.to_owned())),
        })
        .exec_without_returning(self.db.write())
        .await?;
        Ok(())
    }

    /// Failed logins against `username` in the rolling `window`, from any address.
    pub async fn count_login_failures(&self, username: &str, window: Duration) -> Result<u64> {
        let n = login_failures::Entity::find()
            .select_only()
            .column_as(Expr::cust("COUNT(*)"), "n")
            .filter(login_failures::Column::Username.eq(username.trim()))
            .filter(login_failures::Column::At.gt(now_ms() - window_ms(window)))
            .into_tuple::<i64>()
            .one(self.db.read())
            .await?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Failed logins from `address` in the rolling `window`, any account.
    pub async fn count_login_failures_from(&self, address: &str, window: Duration) -> Result<u64> {
        let n = login_failures::Entity::find()
            .select_only()
            .column_as(Expr::cust("COUNT(*)"), "n")
            .filter(login_failures::Column::Address.eq(address))
            .filter(login_failures::Column::At.gt(now_ms() - window_ms(window)))
            .into_tuple::<i64>()
            .one(self.db.read())
            .await?
            .unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Reserves a login attempt of `username` from `address` before its
    /// password is checked: atomically (a PostgreSQL advisory lock per
    /// address, SQLite's write lock) it records the attempt as a failure,
    /// unless `address` has `per_address_limit` failures in the `window`
    /// already, or this account failed from this address `n` times in the
    /// window and the last one is younger than `delay(n)`. A refused attempt
    /// leaves no trace (it does not prolong the refusal). The address's
    /// failures older than the window are deleted on the way. So of any number of
    /// concurrent attempts from one address, at most `per_address_limit` per
    /// window get their password checked.
    pub async fn reserve_login_attempt(
        &self,
        username: &str,
        address: &str,
        per_address_limit: u32,
        window: Duration,
        delay: impl Fn(u64) -> Duration,
    ) -> Result<LoginReservation> {
        let username = username.trim();
        let window = window_ms(window);
        let txn = self.db.write().begin().await?;
        lock_address(&txn, "login", address).await?;
        // SQLite: this write takes the database's write lock first thing, so
        // a concurrent reservation waits instead of reading a stale count.
        let now = now_ms();
        let id = new_id();
        login_failures::Entity::insert(login_failures::ActiveModel {
            id: Set(id.clone()),
            username: Set(username.to_owned()),
            user_id: Set(None),
            at: Set(now),
            address: Set(Some(address.to_owned())),
        })
        .exec_without_returning(&txn)
        .await?;
        let since = now - window;
        // This address's failures that left the window count for nothing now.
        login_failures::Entity::delete_many()
            .filter(login_failures::Column::Address.eq(address))
            .filter(login_failures::Column::At.lte(since))
            .exec(&txn)
            .await?;
        let (count, oldest) = login_failures::Entity::find()
            .select_only()
            .column_as(Expr::cust("COUNT(*)"), "n")
            .column_as(Expr::cust("MIN(at)"), "oldest")
            .filter(login_failures::Column::Address.eq(address))
            .filter(login_failures::Column::At.gt(since))
            .into_tuple::<(i64, Option<i64>)>()
            .one(&txn)
            .await?
            .unwrap_or((0, None));
        if count > i64::from(per_address_limit) {
            txn.rollback().await?;
            let wait = oldest.unwrap_or(now).saturating_add(window).saturating_sub(now);
            return Ok(LoginReservation::AddressLimit {
                retry_after: Duration::from_millis(u64::try_from(wait).unwrap_or(0).max(1)),
            });
        }
        let (pair_failures, last) = login_failures::Entity::find()
            .select_only()
            .column_as(Expr::cust("COUNT(*)"), "n")
            .column_as(Expr::cust("MAX(at)"), "last")
            .filter(login_failures::Column::Username.eq(username))
            .filter(login_failures::Column::Address.eq(address))
            .filter(login_failures::Column::At.gt(since))
            .filter(login_failures::Column::Id.ne(id.as_str()))
            .into_tuple::<(i64, Option<i64>)>()
            .one(&txn)
            .await?
            .unwrap_or((0, None));
        let wait = window_ms(delay(u64::try_from(pair_failures).unwrap_or(0)));
        if let Some(last) = last
            && last.saturating_add(wait) > now
        {
            txn.rollback().await?;
            let left = last.saturating_add(wait) - now;
            return Ok(LoginReservation::TooSoon {
                retry_after: Duration::from_millis(u64::try_from(left).unwrap_or(0).max(1)),
            });
        }
        txn.commit().await?;
        Ok(LoginReservation::Reserved { id })
    }

    /// Names the account of a reserved attempt that turned out a failure.
    pub async fn set_login_failure_user(&self, id: &str, user_id: &str) -> Result<()> {
        login_failures::Entity::update_many()
            .col_expr(login_failures::Column::UserId, Expr::value(user_id))
            .filter(login_failures::Column::Id.eq(id))
            .exec(self.db.write())
            .await?;
        Ok(())
    }

    /// Forgets the failed logins of `username` from `address` (after a
    /// successful login from there, the reserved attempt included). Failures
    /// from other addresses stay: they are someone else's.
    pub async fn clear_login_failures_from(&self, username: &str, address: &str) -> Result<()> {
        login_failures::Entity::delete_many()
            .filter(login_failures::Column::Username.eq(username.trim()))
            .filter(login_failures::Column::Address.eq(address))
            .exec(self.db.write())
            .await?;
        Ok(())
    }

    /// Forgets every failed login of `username`.
    pub async fn clear_login_failures(&self, username: &str) -> Result<()> {
        login_failures::Entity::delete_many()
            .filter(login_failures::Column::Username.eq(username.trim()))
            .exec(self.db.write())
            .await?;
        Ok(())
    }

    // ---- registrations ----

    /// Reserves a registration attempt from `address`, atomically like
    /// [`AuthStore::reserve_login_attempt`]: `None` when recorded, or how
    /// long to wait when `address` made `limit` attempts in the `window`.
    pub async fn reserve_registration(
        &self,
        address: &str,
        username: &str,
        limit: u32,
        window: Duration,
    ) -> Result<Option<Duration>> {
        let window = window_ms(window);
        let txn = self.db.write().begin().await?;
        lock_address(&txn, "register", address).await?;
        let now = now_ms();
        registration_attempts::Entity::insert(registration_attempts::ActiveModel {
            id: Set(new_id()),
            address: Set(address.to_owned()),
            username: Set(username.trim().to_owned()),
            at: Set(now),
        })
        .exec_without_returning(&txn)
        .await?;
        registration_attempts::Entity::delete_many()
            .filter(registration_attempts::Column::Address.eq(address))
            .filter(registration_attempts::Column::At.lte(now - window))
            .exec(&txn)
            .await?;
        let (count, oldest) = registration_attempts::Entity::find()
            .select_only()
            .column_as(Expr::cust("COUNT(*)"), "n")
            .column_as(Expr::cust("MIN(at)"), "oldest")
            .filter(registration_attempts::Column::Address.eq(address))
            .filter(registration_attempts::Column::At.gt(now - window))
            .into_tuple::<(i64, Option<i64>)>()
            .one(&txn)
            .await?
            .unwrap_or((0, None));
        if count > i64::from(limit) {
            txn.rollback().await?;
            let wait = oldest.unwrap_or(now).saturating_add(window).saturating_sub(now);
            return Ok(Some(Duration::from_millis(
                u64::try_from(wait).unwrap_or(0).max(1),
            )));
        }
        txn.commit().await?;
        Ok(None)
    }

    // ---- audit ----

    /// Appends an event to the audit log.
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<AuditRecord> {
        let record = AuditRecord {
            id: new_id(),
            at_ms: now_ms(),
            actor_id: entry.actor_id,
            target_id: entry.target_id,
            action: entry.action,
            detail: entry.detail,
        };
        audit_events::Entity::insert(audit_events::ActiveModel {
            id: Set(record.id.clone()),
            at: Set(record.at_ms),
            actor_id: Set(record.actor_id.clone()),
            target_id: Set(record.target_id.clone()),
            action: Set(record.action.clone()),
            detail: Set(record.detail.clone()),
        })
        .exec_without_returning(self.db.write())
        .await?;
        Ok(record)
    }

    /// One page of audit events, newest first, optionally only about one user.
    pub async fn list_audit_events(
        &self,
        target_id: Option<&str>,
        page_size_requested: u32,
        page_token: &str,
    ) -> Result<(Vec<AuditRecord>, String)> {
        let size = page_size(page_size_requested);
        let mut query = audit_events::Entity::find()
            .order_by_desc(audit_events::Column::At)
            .order_by_desc(audit_events::Column::Id);
        if let Some(target) = target_id {
            query = query.filter(audit_events::Column::TargetId.eq(target));
        }
        if let Some(after) = decode_page_token("a", page_token)? {
            let (at, id) = after.split_once('/').ok_or(AuthError::InvalidPageToken)?;
            let at: i64 = at.parse().map_err(|_| AuthError::InvalidPageToken)?;
            query = query.filter(
                sea_orm::Condition::any()
                    .add(audit_events::Column::At.lt(at))
                    .add(
                        sea_orm::Condition::all()
                            .add(audit_events::Column::At.eq(at))
                            .add(audit_events::Column::Id.lt(id)),
                    ),
            );
        }
        let mut rows = query.limit(size + 1).all(self.db.read()).await?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next = match (more, rows.last()) {
            (true, Some(last)) => encode_page_token("a", &format!("{}/{}", last.at, last.id)),
            _ => String::new(),
        };
        Ok((
            rows.into_iter()
                .map(|m| AuditRecord {
                    id: m.id,
                    at_ms: m.at,
                    actor_id: m.actor_id,
                    target_id: m.target_id,
                    action: m.action,
                    detail: m.detail,
                })
                .collect(),
            next,
        ))
    }
}

fn validate_username(username: &str) -> Result<()> {
    let chars = username.chars().count();
    if chars == 0 || chars > MAX_USERNAME_CHARS {
        return Err(AuthError::InvalidArgument(format!(
            "a username has 1 to {MAX_USERNAME_CHARS} characters"
        )));
    }
    if !username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
    {
        return Err(AuthError::InvalidArgument(
            "a username may hold letters, digits and _ - . @ only".into(),
        ));
    }
    Ok(())
}

async fn insert_refresh_token<C: ConnectionTrait>(
    db: &C,
    id: &str,
    user_id: &str,
    token_hash: &str,
    expires_at_ms: i64,
) -> Result<()> {
    refresh_tokens::Entity::insert(refresh_tokens::ActiveModel {
        id: Set(id.to_owned()),
        user_id: Set(user_id.to_owned()),
        token_hash: Set(token_hash.to_owned()),
        created_at: Set(now_ms()),
        expires_at: Set(expires_at_ms),
        revoked_at: Set(None),
        replaced_by: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// On PostgreSQL, serialises the transactions about one client `address`
/// in one `scope` (an advisory lock, released at commit or rollback). On
/// SQLite the first write of the transaction serialises instead.
async fn lock_address<C: ConnectionTrait>(txn: &C, scope: &str, address: &str) -> Result<()> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("reporunner.auth.{scope}:{address}").into()],
        ))
        .await?;
    }
    Ok(())
}

/// How many `kind` events `user_id` has after `since`, and the oldest one's time.
async fn window_count<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    kind: &str,
    since: i64,
) -> Result<(u32, Option<i64>)> {
    let (count, oldest) = quota_events::Entity::find()
        .select_only()
        .column_as(Expr::cust("COUNT(*)"), "n")
        .column_as(Expr::cust("MIN(at)"), "oldest")
        .filter(quota_events::Column::UserId.eq(user_id))
        .filter(quota_events::Column::Kind.eq(kind))
        .filter(quota_events::Column::At.gt(since))
        .into_tuple::<(i64, Option<i64>)>()
        .one(db)
        .await?
        .unwrap_or((0, None));
    Ok((u32::try_from(count).unwrap_or(u32::MAX), oldest))
}

/// Takes the user's row lock inside `txn`, or fails with `UserNotFound`.
async fn lock_user<C: ConnectionTrait>(txn: &C, user_id: &str) -> Result<()> {
    let found = if txn.get_database_backend() == DbBackend::Postgres {
        users::Entity::find_by_id(user_id.to_owned())
            .lock_exclusive()
            .one(txn)
            .await?
            .is_some()
    } else {
        // SQLite has no row locks; a write takes the database's write lock
        // now, so that a concurrent transaction waits instead of failing
        // with SQLITE_BUSY when it upgrades from read to write.
        users::Entity::update_many()
            .col_expr(users::Column::UpdatedAt, Expr::col(users::Column::UpdatedAt))
            .filter(users::Column::Id.eq(user_id))
            .exec(txn)
            .await?
            .rows_affected
            == 1
    };
    if found {
        Ok(())
    } else {
        Err(AuthError::UserNotFound(user_id.to_owned()))
    }
}
