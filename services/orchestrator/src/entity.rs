//! sea-orm entities of the run store (see `migration.rs`).

pub mod runs {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        /// A UUID in its hyphenated text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub owner_id: String,
        /// The proto name, e.g. `RUN_STATE_FETCHING`.
        pub state: String,
        /// The proto name, e.g. `RUN_GOAL_ANALYZE`.
        pub goal: String,
        /// A prost-encoded `RepoSource`.
        pub source: Vec<u8>,
        /// The fetched workspace's id, so that a later run can re-analyze it.
        pub workspace_id: Option<String>,
        /// A prost-encoded `Workspace`, once fetched.
        pub workspace: Option<Vec<u8>>,
        /// A prost-encoded `RunPlan`, once analyzed.
        pub plan: Option<Vec<u8>>,
        #[sea_orm(column_type = "Text")]
        pub error: String,
        pub attempts: i32,
        /// Unix milliseconds.
        pub created_at: i64,
        pub updated_at: i64,
        /// A prost-encoded `StoredComponents`: the run's processes.
        pub components: Option<Vec<u8>>,
        /// A prost-encoded `StoredTestResults`: `Run.test_results`.
        pub test_results: Option<Vec<u8>>,
        /// The replica driving the run (`OrchestratorConfig::replica`);
        /// none for runs older than leases.
        pub lease_owner: Option<String>,
        /// Unix milliseconds until which `lease_owner` holds the run.
        pub lease_until: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod run_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "run_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        /// 1, 2, 3, ... per run, without gaps.
        #[sea_orm(primary_key, auto_increment = false)]
        pub sequence: i64,
        /// Unix milliseconds.
        pub at: i64,
        /// A prost-encoded `RunEvent`.
        pub event: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
