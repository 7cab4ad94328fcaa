//! The schema, as sea-orm migrations. The same migrations run on SQLite and
//! PostgreSQL.

use sea_orm_migration::prelude::*;

/// All migrations of the auth store, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Initial), Box::new(M0002ClientAddresses)]
    }

    fn migration_table_name() -> DynIden {
        "auth_migrations".into_iden()
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Username,
    PasswordHash,
    Tier,
    Blocked,
    AdminSingleton,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    UserId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    ReplacedBy,
}

#[derive(DeriveIden)]
enum QuotaEvents {
    Table,
    Id,
    UserId,
    Kind,
    Rpc,
    At,
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    Id,
    Username,
    UserId,
    At,
    Address,
}

#[derive(DeriveIden)]
enum RegistrationAttempts {
    Table,
    Id,
    Address,
    Username,
    At,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    ActorId,
    TargetId,
    Action,
    Detail,
}

#[derive(DeriveMigrationName)]
struct M0001Initial;

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Timestamps are Unix milliseconds in BIGINT columns: identical on
        // SQLite and PostgreSQL and cheap to compare in the quota query.
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(ColumnDef::new(Users::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Users::Username).string().not_null().unique_key())
                    .col(ColumnDef::new(Users::PasswordHash).string().not_null())
                    .col(ColumnDef::new(Users::Tier).string().not_null())
                    .col(ColumnDef::new(Users::Blocked).boolean().not_null().default(false))
                    // 1 for the admin, NULL for everyone else: the unique index
                    // below allows many NULLs and one 1, on both databases.
                    .col(ColumnDef::new(Users::AdminSingleton).integer().null())
                    .col(ColumnDef::new(Users::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Users::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_one_admin")
                    .table(Users::Table)
                    .col(Users::AdminSingleton)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(
                        ColumnDef::new(RefreshTokens::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RefreshTokens::UserId).string().not_null())
                    .col(
                        ColumnDef::new(RefreshTokens::TokenHash)
                            .string()
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(RefreshTokens::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(RefreshTokens::ExpiresAt).big_integer().not_null())
                    .col(ColumnDef::new(RefreshTokens::RevokedAt).big_integer().null())
                    .col(ColumnDef::new(RefreshTokens::ReplacedBy).string().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("refresh_tokens_user")
                            .from(RefreshTokens::Table, RefreshTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_by_user")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(QuotaEvents::Table)
                    .col(ColumnDef::new(QuotaEvents::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(QuotaEvents::UserId).string().not_null())
                    .col(ColumnDef::new(QuotaEvents::Kind).string().not_null())
                    .col(ColumnDef::new(QuotaEvents::Rpc).string().not_null())
                    .col(ColumnDef::new(QuotaEvents::At).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("quota_events_user")
                            .from(QuotaEvents::Table, QuotaEvents::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quota_events_by_user_kind_at")
                    .table(QuotaEvents::Table)
                    .col(QuotaEvents::UserId)
                    .col(QuotaEvents::Kind)
                    .col(QuotaEvents::At)
                    .to_owned(),
            )
            .await?;

        // Keyed by username so that failures against unknown names count too.
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .col(
                        ColumnDef::new(LoginFailures::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(LoginFailures::Username).string().not_null())
                    .col(ColumnDef::new(LoginFailures::UserId).string().null())
                    .col(ColumnDef::new(LoginFailures::At).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_failures_by_username_at")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::Username)
                    .col(LoginFailures::At)
                    .to_owned(),
            )
            .await?;

        // No foreign keys: the audit log outlives deleted users.
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(ColumnDef::new(AuditEvents::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(AuditEvents::At).big_integer().not_null())
                    .col(ColumnDef::new(AuditEvents::ActorId).string().null())
                    .col(ColumnDef::new(AuditEvents::TargetId).string().null())
                    .col(ColumnDef::new(AuditEvents::Action).string().not_null())
                    .col(ColumnDef::new(AuditEvents::Detail).text().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_by_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::At)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_by_target_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::TargetId)
                    .col(AuditEvents::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            LoginFailures::Table.into_iden(),
            QuotaEvents::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

/// Failed logins carry the client address (throttling is per address and
/// per account and address, never per account alone), and registrations
/// are counted per address.
struct M0002ClientAddresses;

// Named by hand: `DeriveMigrationName` names a migration after its file, and
// the first one (recorded as "migration" in existing databases) has that.
impl MigrationName for M0002ClientAddresses {
    fn name(&self) -> &str {
        "m0002_client_addresses"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002ClientAddresses {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // NULL on rows written before this migration: they count for no address.
        manager
            .alter_table(
                Table::alter()
                    .table(LoginFailures::Table)
                    .add_column(ColumnDef::new(LoginFailures::Address).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_failures_by_address_at")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::Address)
                    .col(LoginFailures::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_failures_by_username_address_at")
                    .table(LoginFailures::Table)
                    .col(LoginFailures::Username)
                    .col(LoginFailures::Address)
                    .col(LoginFailures::At)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RegistrationAttempts::Table)
                    .col(
                        ColumnDef::new(RegistrationAttempts::Id)
                            .string()
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(RegistrationAttempts::Address).string().not_null())
                    .col(ColumnDef::new(RegistrationAttempts::Username).string().not_null())
                    .col(ColumnDef::new(RegistrationAttempts::At).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("registration_attempts_by_address_at")
                    .table(RegistrationAttempts::Table)
                    .col(RegistrationAttempts::Address)
                    .col(RegistrationAttempts::At)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RegistrationAttempts::Table).to_owned())
            .await?;
        for index in [
            "login_failures_by_username_address_at",
            "login_failures_by_address_at",
        ] {
            manager
                .drop_index(Index::drop().name(index).table(LoginFailures::Table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(LoginFailures::Table)
                    .drop_column(LoginFailures::Address)
                    .to_owned(),
            )
            .await
    }
}
