//! The run store's schema, as sea-orm migrations. The same migrations run on
//! SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

/// All migrations of the run store, in order.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Runs),
            Box::new(M0002Components),
            Box::new(M0003TestResults),
            Box::new(M0004Leases),
        ]
    }

    fn migration_table_name() -> DynIden {
        "orchestrator_migrations".into_iden()
    }
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    OwnerId,
    State,
    Goal,
    Source,
    WorkspaceId,
    Workspace,
    Plan,
    Error,
    Attempts,
    CreatedAt,
    UpdatedAt,
    Components,
    TestResults,
    LeaseOwner,
    LeaseUntil,
}

#[derive(DeriveIden)]
enum RunEvents {
    Table,
    RunId,
    Sequence,
    At,
    Event,
}

#[derive(DeriveMigrationName)]
struct M0001Runs;

#[async_trait::async_trait]
impl MigrationTrait for M0001Runs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Timestamps are Unix milliseconds in BIGINT columns; messages are
        // prost bytes (BLOB / BYTEA), so the proto stays the one schema of
        // what a run holds.
        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(ColumnDef::new(Runs::Id).string().not_null().primary_key())
                    .col(ColumnDef::new(Runs::OwnerId).string().not_null())
                    .col(ColumnDef::new(Runs::State).string().not_null())
                    .col(ColumnDef::new(Runs::Goal).string().not_null())
                    .col(ColumnDef::new(Runs::Source).binary().not_null())
                    .col(ColumnDef::new(Runs::WorkspaceId).string().null())
                    .col(ColumnDef::new(Runs::Workspace).binary().null())
                    .col(ColumnDef::new(Runs::Plan).binary().null())
                    .col(ColumnDef::new(Runs::Error).text().not_null())
                    .col(ColumnDef::new(Runs::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(Runs::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Runs::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("runs_by_owner_created")
                    .table(Runs::Table)
                    .col(Runs::OwnerId)
                    .col(Runs::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("runs_by_owner_workspace")
                    .table(Runs::Table)
                    .col(Runs::OwnerId)
                    .col(Runs::WorkspaceId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("runs_by_state")
                    .table(Runs::Table)
                    .col(Runs::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RunEvents::Table)
                    .col(ColumnDef::new(RunEvents::RunId).string().not_null())
                    .col(ColumnDef::new(RunEvents::Sequence).big_integer().not_null())
                    .col(ColumnDef::new(RunEvents::At).big_integer().not_null())
                    .col(ColumnDef::new(RunEvents::Event).binary().not_null())
                    // The key makes a duplicate sequence fail instead of
                    // forking a run's history.
                    .primary_key(Index::create().col(RunEvents::RunId).col(RunEvents::Sequence))
                    .foreign_key(
                        ForeignKey::create()
                            .name("run_events_run")
                            .from(RunEvents::Table, RunEvents::RunId)
                            .to(Runs::Table, Runs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RunEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Runs::Table).to_owned())
            .await
    }
}

/// The processes a run started and their health (`Run.components`), so that
/// StopRun and a restarted orchestrator find them.
struct M0002Components;

// Named by hand: the derive names a migration after its file, which M0001
// already took.
impl MigrationName for M0002Components {
    fn name(&self) -> &str {
        "m0002_components"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Components {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(ColumnDef::new(Runs::Components).binary().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::Components)
                    .to_owned(),
            )
            .await
    }
}

/// Each tested component's framework, outcome and counts (`Run.test_results`).
struct M0003TestResults;

impl MigrationName for M0003TestResults {
    fn name(&self) -> &str {
        "m0003_test_results"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003TestResults {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(ColumnDef::new(Runs::TestResults).binary().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::TestResults)
                    .to_owned(),
            )
            .await
    }
}

/// Who drives each run and until when (see `store::Lease`): runs left by a
/// dead replica are found by their expired lease, never by start-up alone.
/// Runs from before this migration have no owner: the first replica to
/// start takes them over.
struct M0004Leases;

impl MigrationName for M0004Leases {
    fn name(&self) -> &str {
        "m0004_leases"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Leases {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(ColumnDef::new(Runs::LeaseOwner).string().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(
                        ColumnDef::new(Runs::LeaseUntil)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("runs_lease_owner")
                    .table(Runs::Table)
                    .col(Runs::LeaseOwner)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("runs_lease_owner")
                    .table(Runs::Table)
                    .to_owned(),
            )
            .await?;
        for column in [Runs::LeaseUntil, Runs::LeaseOwner] {
            manager
                .alter_table(Table::alter().table(Runs::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
