//! Runs and their events through sea-orm. The same code runs on SQLite (the
//! embedded default, `<data_dir>/orchestrator.db`) and PostgreSQL (shared
//! deployments).
//!
//! Every write to a run goes through one transaction that first takes the
//! run's row (an `UPDATE ... WHERE state is not terminal`: a row lock on
//! PostgreSQL, the write lock on SQLite), so that the events of a run get
//! sequence numbers 1, 2, 3, ... without gaps, and nothing is written to a
//! run after its terminal state.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message as _;
use reporunner_db::Db;
use reporunner_proto::{
    common::v1::{RunPlan, Workspace},
    orchestrator::v1::{
        ComponentHealth, ComponentStatus, RepoSource, Run, RunEvent, RunGoal, RunState, TestResult, run_event,
    },
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait, sea_query::Expr,
};
use sea_orm_migration::MigratorTrait;

use crate::{
    OrchestratorError, Result,
    entity::{run_events, runs},
    migration::Migrator,
};

/// The most runs one page of ListRuns holds.
pub const MAX_PAGE_SIZE: u32 = 500;
/// The page size when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// States a run never leaves.
pub const TERMINAL_STATES: [RunState; 4] = [
    RunState::Succeeded,
    RunState::Failed,
    RunState::Stopped,
    RunState::Interrupted,
];

/// Whether a run in `state` is over.
pub fn is_terminal(state: RunState) -> bool {
    TERMINAL_STATES.contains(&state)
}

fn terminal_names() -> Vec<&'static str> {
    TERMINAL_STATES.iter().map(|s| s.as_str_name()).collect()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1_000),
        nanos: i32::try_from(ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
    }
}

/// A run to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub owner_id: String,
    pub goal: RunGoal,
    pub source: RepoSource,
    /// Set when the run re-analyzes a workspace fetched earlier.
    pub workspace: Option<Workspace>,
}

/// What [`RunStore::create_run`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created {
    /// The run, PENDING, and its first event.
    Run(Box<Run>, Box<RunEvent>),
    /// Nothing: the owner already has `active` runs and the limit allows no more.
    AtLimit { active: u64 },
}

/// A process a run started through the runner agent, as stored with the run:
/// what `Run.components` shows, plus what StopRun and a restarted
/// orchestrator need to find and probe it again.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunComponent {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub url: String,
    /// `ComponentHealth` (tag 3 held it as words until the contract had
    /// an enum).
    #[prost(enumeration = "ComponentHealth", tag = "9")]
    pub health: i32,
    #[prost(uint32, tag = "4")]
    pub port: u32,
    /// The runner's process id (`proc-...`).
    #[prost(string, tag = "5")]
    pub process_id: String,
    /// The host pid of the process (the sandbox's, when sandboxed).
    #[prost(uint32, tag = "6")]
    pub pid: u32,
    /// `ComponentKind` of the plan's component.
    #[prost(int32, tag = "7")]
    pub kind: i32,
    /// The plan's candidate health paths.
    #[prost(string, repeated, tag = "8")]
    pub health_paths: Vec<String>,
}

impl RunComponent {
    pub fn status(&self) -> ComponentStatus {
        ComponentStatus {
            name: self.name.clone(),
            url: self.url.clone(),
            health: self.health,
            port: self.port,
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredComponents {
    #[prost(message, repeated, tag = "1")]
    components: Vec<RunComponent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StoredTestResults {
    #[prost(message, repeated, tag = "1")]
    results: Vec<TestResult>,
}

/// Changes to a run, written together with one event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunChange {
    pub state: Option<RunState>,
    pub workspace: Option<Workspace>,
    pub plan: Option<RunPlan>,
    pub error: Option<String>,
    pub attempts: Option<u32>,
    /// Replaces the run's components.
    pub components: Option<Vec<RunComponent>>,
    /// Replaces the run's test results.
    pub test_results: Option<Vec<TestResult>>,
}

impl RunChange {
    pub fn state(state: RunState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }
}

/// Who this store's writer is in the runs' leases: a run belongs to the
/// replica that created or took it over, which renews the lease while it
/// lives. Another replica takes a run over only once its lease expired (or,
/// at start-up, when the run is leased to the starting replica's own name:
/// its previous life).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The replica's name (`OrchestratorConfig::replica`).
    pub replica: String,
    /// How long a lease lasts without renewal.
    pub ttl: std::time::Duration,
}

impl Default for Lease {
    fn default() -> Self {
        let config = crate::OrchestratorConfig::default();
        Self {
            replica: config.replica(),
            ttl: config.run_lease(),
        }
    }
}

impl Lease {
    fn until(&self, now: i64) -> i64 {
        now.saturating_add(i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The most runs one sweep takes over, so that a sweep stays short.
pub const MAX_CLAIMS: u64 = 1_000;

/// The orchestrator's database of runs and run events.
#[derive(Clone, Debug)]
pub struct RunStore {
    db: Db,
    lease: Arc<Lease>,
    finished: Arc<FinishedRuns>,
}

/// How many finished runs a store keeps in memory.
pub const FINISHED_RUNS_CACHED: usize = 4_096;

/// Finished runs as last read, most recently used first. A run that is over
/// never changes again (every write to a run is conditioned on its state
/// not being terminal, on any replica), so a cached one is never stale, and
/// reading it again (a client polling a run it watched end, the dashboard's
/// run page, a WatchRun replay) costs no database round trip.
#[derive(Debug)]
struct FinishedRuns(std::sync::Mutex<lru::LruCache<String, Run>>);

impl FinishedRuns {
    fn new(capacity: usize) -> Self {
        let capacity = std::num::NonZeroUsize::new(capacity).unwrap_or(std::num::NonZeroUsize::MIN);
        Self(std::sync::Mutex::new(lru::LruCache::new(capacity)))
    }

    fn get(&self, id: &str) -> Option<Run> {
        self.0.lock().ok()?.get(id).cloned()
    }

    /// Keeps `run` when it is over.
    fn offer(&self, run: &Run) {
        if is_terminal(run.state())
            && let Ok(mut cache) = self.0.lock()
        {
            cache.put(run.id.clone(), run.clone());
        }
    }
}

impl RunStore {
    /// Connects to `url` (`sqlite://...?mode=rwc` or `postgres://...`) and
    /// brings the schema up to date. A SQLite file is created with mode 0600
    /// (SQLite gives its `-wal`/`-shm` the same), and an existing one and
    /// its companions are tightened to 0600.
    pub async fn connect(url: &str) -> Result<Self> {
        let private = |e: std::io::Error| {
            OrchestratorError::InvalidConfig(format!("cannot make the run database private: {e}"))
        };
        let path = private_sqlite::prepare(url).map_err(private)?;
        let db = Db::connect(url).await?;
        let store = Self {
            db,
            lease: Arc::new(Lease::default()),
            finished: Arc::new(FinishedRuns::new(FINISHED_RUNS_CACHED)),
        };
        Migrator::up(store.db.write(), None).await?;
        if let Some(path) = path {
            private_sqlite::tighten(&path).map_err(private)?;
        }
        Ok(store)
    }

    /// The database, where it reads and where it writes.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// This store writing as `lease`'s replica: the runs it creates are
    /// leased to it.
    #[must_use]
    pub fn leased_by(mut self, lease: Lease) -> Self {
        self.lease = Arc::new(lease);
        self
    }

    /// The replica this store writes as.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Extends the leases this replica holds on `run_ids` (the runs it
    /// drives) while they are unfinished; how many. A run it holds but no
    /// longer drives is left to expire, and is then taken over.
    pub async fn renew_leases(&self, run_ids: &[String]) -> Result<u64> {
        if run_ids.is_empty() {
            return Ok(0);
        }
        let until = self.lease.until(now_ms());
        Ok(runs::Entity::update_many()
            .col_expr(runs::Column::LeaseUntil, Expr::value(until))
            .filter(runs::Column::Id.is_in(run_ids.iter().map(String::as_str)))
            .filter(runs::Column::LeaseOwner.eq(self.lease.replica.as_str()))
            .filter(runs::Column::State.is_not_in(terminal_names()))
            .exec(self.db.write())
            .await?
            .rows_affected)
    }

    /// Which of `run_ids` another replica holds now (it took them over).
    pub async fn leased_elsewhere(&self, run_ids: &[String]) -> Result<Vec<String>> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(runs::Column::Id.is_in(run_ids.iter().map(String::as_str)))
            .filter(runs::Column::LeaseOwner.is_not_null())
            .filter(runs::Column::LeaseOwner.ne(self.lease.replica.as_str()))
            .into_tuple::<String>()
            .all(self.db.read())
            .await?)
    }

    /// Takes over unfinished runs nobody holds: their lease expired, or
    /// they have no owner (older than leases), or (`own`: at start-up) they
    /// are leased to this replica's name. Each is claimed by one conditional
    /// update, so that of two replicas sweeping at once only one gets it.
    /// Returns the claimed ids, at most [`MAX_CLAIMS`], oldest first.
    pub async fn claim_unheld(&self, own: bool) -> Result<Vec<String>> {
        let now = now_ms();
        let unheld = || {
            let mut free = Condition::any()
                .add(runs::Column::LeaseOwner.is_null())
                .add(runs::Column::LeaseUntil.lt(now));
            if own {
                free = free.add(runs::Column::LeaseOwner.eq(self.lease.replica.as_str()));
            }
            Condition::all()
                .add(runs::Column::State.is_not_in(terminal_names()))
                .add(free)
        };
        let candidates: Vec<String> = runs::Entity::find()
            .select_only()
            .column(runs::Column::Id)
            .filter(unheld())
            .order_by_asc(runs::Column::CreatedAt)
            .limit(MAX_CLAIMS)
            .into_tuple::<String>()
            .all(self.db.read())
            .await?;
        let until = self.lease.until(now);
        let mut claimed = Vec::with_capacity(candidates.len());
        for id in candidates {
            let taken = runs::Entity::update_many()
                .col_expr(runs::Column::LeaseOwner, Expr::value(self.lease.replica.clone()))
                .col_expr(runs::Column::LeaseUntil, Expr::value(until))
                .filter(runs::Column::Id.eq(id.as_str()))
                .filter(unheld())
                .exec(self.db.write())
                .await?
                .rows_affected;
            if taken == 1 {
                claimed.push(id);
            }
        }
        Ok(claimed)
    }

    /// Creates a PENDING run with its first event, unless the owner already
    /// has `limit` or more runs that are not over.
    pub async fn create_run(&self, new: NewRun, limit: u32) -> Result<Created> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let txn = self.db.write().begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            // Serialises creations per owner across replicas, so that two
            // concurrent creations cannot both pass the limit.
            txn.query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                [new.owner_id.clone().into()],
            ))
            .await?;
        }
        // On SQLite the insert takes the write lock before the count below.
        runs::Entity::insert(runs::ActiveModel {
            id: Set(id.clone()),
            owner_id: Set(new.owner_id.clone()),
            state: Set(RunState::Pending.as_str_name().to_owned()),
            goal: Set(new.goal.as_str_name().to_owned()),
            source: Set(new.source.encode_to_vec()),
            workspace_id: Set(new.workspace.as_ref().map(|w| w.id.clone())),
            workspace: Set(new.workspace.as_ref().map(|w| w.encode_to_vec())),
            plan: Set(None),
            error: Set(String::new()),
            attempts: Set(0),
            created_at: Set(now),
            updated_at: Set(now),
            components: Set(None),
            test_results: Set(None),
            lease_owner: Set(Some(self.lease.replica.clone())),
            lease_until: Set(self.lease.until(now)),
        })
        .exec_without_returning(&txn)
        .await?;
        let active = runs::Entity::find()
            .filter(runs::Column::OwnerId.eq(new.owner_id.as_str()))
            .filter(runs::Column::State.is_not_in(terminal_names()))
            .count(&txn)
            .await?;
        if active > u64::from(limit) {
            txn.rollback().await?;
            return Ok(Created::AtLimit { active: active - 1 });
        }
        let event = insert_event(
            &txn,
            &id,
            1,
            now,
            run_event::Event::State(RunState::Pending.into()),
        )
        .await?;
        let run = find_run(&txn, &id)
            .await?
            .ok_or_else(|| OrchestratorError::Corrupt(format!("run {id} vanished while created")))?;
        txn.commit().await?;
        Ok(Created::Run(Box::new(run), Box::new(event)))
    }

    /// The run `id`, whoever owns it.
    pub async fn get_run(&self, id: &str) -> Result<Option<Run>> {
        if let Some(run) = self.finished.get(id) {
            return Ok(Some(run));
        }
        let run = find_run(self.db.read(), id).await?;
        if let Some(run) = &run {
            self.finished.offer(run);
        }
        Ok(run)
    }

    /// Runs of `owner_id` that are not over.
    pub async fn count_active(&self, owner_id: &str) -> Result<u64> {
        Ok(runs::Entity::find()
            .filter(runs::Column::OwnerId.eq(owner_id))
            .filter(runs::Column::State.is_not_in(terminal_names()))
            .count(self.db.read())
            .await?)
    }

    /// The workspace `workspace_id` as a run of `owner_id` fetched it, newest
    /// first; `None` when no run of theirs did.
    pub async fn find_workspace(&self, owner_id: &str, workspace_id: &str) -> Result<Option<Workspace>> {
        let row = runs::Entity::find()
            .filter(runs::Column::OwnerId.eq(owner_id))
            .filter(runs::Column::WorkspaceId.eq(workspace_id))
            .filter(runs::Column::Workspace.is_not_null())
            .order_by_desc(runs::Column::CreatedAt)
            .one(self.db.read())
            .await?;
        match row.and_then(|r| r.workspace) {
            Some(bytes) => Ok(Some(Workspace::decode(bytes.as_slice())?)),
            None => Ok(None),
        }
    }

    /// One page of runs, newest first: those of `owner_id`, or everyone's for
    /// `None`; only in `states` unless empty. `page_token` is the previous
    /// page's `next_page_token` (empty for the first); the returned token is
    /// empty on the last page.
    pub async fn list_runs(
        &self,
        owner_id: Option<&str>,
        states: &[RunState],
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Run>, String)> {
        let size = u64::from(match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        });
        let mut query = runs::Entity::find()
            .order_by_desc(runs::Column::CreatedAt)
            .order_by_desc(runs::Column::Id);
        if let Some(owner) = owner_id {
            query = query.filter(runs::Column::OwnerId.eq(owner));
        }
        if !states.is_empty() {
            query = query.filter(runs::Column::State.is_in(states.iter().map(|s| s.as_str_name())));
        }
        if let Some((created, id)) = decode_page_token(page_token)? {
            query = query.filter(
                Condition::any().add(runs::Column::CreatedAt.lt(created)).add(
                    Condition::all()
                        .add(runs::Column::CreatedAt.eq(created))
                        .add(runs::Column::Id.lt(id)),
                ),
            );
        }
        let mut rows = query.limit(size + 1).all(self.db.read()).await?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let next = match (more, rows.last()) {
            (true, Some(last)) => encode_page_token(last.created_at, &last.id),
            _ => String::new(),
        };
        let runs = rows.into_iter().map(to_run).collect::<Result<Vec<_>>>()?;
        Ok((runs, next))
    }

    /// Applies `change` to the run and records `event` as its next event, in
    /// one transaction. `None` (and nothing written) when the run is unknown
    /// or already over.
    pub async fn append(
        &self,
        run_id: &str,
        change: RunChange,
        event: run_event::Event,
    ) -> Result<Option<(Run, RunEvent)>> {
        let now = now_ms();
        let txn = self.db.write().begin().await?;
        let mut update = runs::Entity::update_many()
            .col_expr(runs::Column::UpdatedAt, Expr::value(now))
            .filter(runs::Column::Id.eq(run_id))
            .filter(runs::Column::State.is_not_in(terminal_names()));
        if let Some(state) = change.state {
            update = update.col_expr(runs::Column::State, Expr::value(state.as_str_name()));
        }
        if let Some(workspace) = &change.workspace {
            update = update
                .col_expr(runs::Column::WorkspaceId, Expr::value(workspace.id.clone()))
                .col_expr(runs::Column::Workspace, Expr::value(workspace.encode_to_vec()));
        }
        if let Some(plan) = &change.plan {
            update = update.col_expr(runs::Column::Plan, Expr::value(plan.encode_to_vec()));
        }
        if let Some(error) = change.error {
            update = update.col_expr(runs::Column::Error, Expr::value(error));
        }
        if let Some(components) = change.components {
            let bytes = StoredComponents { components }.encode_to_vec();
            update = update.col_expr(runs::Column::Components, Expr::value(bytes));
        }
        if let Some(results) = change.test_results {
            let bytes = StoredTestResults { results }.encode_to_vec();
            update = update.col_expr(runs::Column::TestResults, Expr::value(bytes));
        }
        if let Some(attempts) = change.attempts {
            let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
            update = update.col_expr(runs::Column::Attempts, Expr::value(attempts));
        }
        // The row lock (PostgreSQL) or write lock (SQLite) is held from here
        // to the commit; a concurrent writer of this run waits, then sees the
        // new state.
        if update.exec(&txn).await?.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let last: Option<i64> = run_events::Entity::find()
            .select_only()
            .column_as(Expr::cust("MAX(sequence)"), "last")
            .filter(run_events::Column::RunId.eq(run_id))
            .into_tuple::<Option<i64>>()
            .one(&txn)
            .await?
            .flatten();
        let event = insert_event(&txn, run_id, last.unwrap_or(0) + 1, now, event).await?;
        let run = find_run(&txn, run_id)
            .await?
            .ok_or_else(|| OrchestratorError::Corrupt(format!("run {run_id} vanished while updated")))?;
        txn.commit().await?;
        self.finished.offer(&run);
        Ok(Some((run, event)))
    }

    /// Moves the run to `state`, recording the state event.
    pub async fn transition(
        &self,
        run_id: &str,
        state: RunState,
        mut change: RunChange,
    ) -> Result<Option<(Run, RunEvent)>> {
        change.state = Some(state);
        self.append(run_id, change, run_event::Event::State(state.into()))
            .await
    }

    /// Events of `run_id` with a sequence above `after`, in order, at most `limit`.
    pub async fn events_after(&self, run_id: &str, after: u64, limit: u64) -> Result<Vec<RunEvent>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        run_events::Entity::find()
            .filter(run_events::Column::RunId.eq(run_id))
            .filter(run_events::Column::Sequence.gt(after))
            .order_by_asc(run_events::Column::Sequence)
            .limit(limit)
            .all(self.db.read())
            .await?
            .into_iter()
            .map(|row| Ok(RunEvent::decode(row.event.as_slice())?))
            .collect()
    }

    /// The components (processes) of run `id`; empty when it has none or is unknown.
    pub async fn components(&self, id: &str) -> Result<Vec<RunComponent>> {
        let row = runs::Entity::find_by_id(id.to_owned())
            .one(self.db.read())
            .await?;
        decode_components(row.and_then(|r| r.components))
    }
}

async fn insert_event<C: ConnectionTrait>(
    db: &C,
    run_id: &str,
    sequence: i64,
    at: i64,
    event: run_event::Event,
) -> Result<RunEvent> {
    let event = RunEvent {
        run_id: run_id.to_owned(),
        sequence: u64::try_from(sequence).unwrap_or(0),
        time: Some(timestamp(at)),
        event: Some(event),
    };
    run_events::Entity::insert(run_events::ActiveModel {
        run_id: Set(run_id.to_owned()),
        sequence: Set(sequence),
        at: Set(at),
        event: Set(event.encode_to_vec()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(event)
}

async fn find_run<C: ConnectionTrait>(db: &C, id: &str) -> Result<Option<Run>> {
    runs::Entity::find_by_id(id.to_owned())
        .one(db)
        .await?
        .map(to_run)
        .transpose()
}

fn to_run(m: runs::Model) -> Result<Run> {
    let state = RunState::from_str_name(&m.state)
        .ok_or_else(|| OrchestratorError::Corrupt(format!("run {} has unknown state `{}`", m.id, m.state)))?;
    let goal = RunGoal::from_str_name(&m.goal)
        .ok_or_else(|| OrchestratorError::Corrupt(format!("run {} has unknown goal `{}`", m.id, m.goal)))?;
    let components = decode_components(m.components)?
        .iter()
        .map(RunComponent::status)
        .collect();
    let test_results = match m.test_results {
        Some(bytes) => StoredTestResults::decode(bytes.as_slice())?.results,
        None => Vec::new(),
    };
    Ok(Run {
        id: m.id,
        owner_id: m.owner_id,
        state: state.into(),
        goal: goal.into(),
        source: Some(RepoSource::decode(m.source.as_slice())?),
        workspace: m.workspace.map(|b| Workspace::decode(b.as_slice())).transpose()?,
        plan: m.plan.map(|b| RunPlan::decode(b.as_slice())).transpose()?,
        components,
        error: m.error,
        created_at: Some(timestamp(m.created_at)),
        updated_at: Some(timestamp(m.updated_at)),
        attempts: u32::try_from(m.attempts).unwrap_or(0),
        test_results,
    })
}

fn decode_components(bytes: Option<Vec<u8>>) -> Result<Vec<RunComponent>> {
    match bytes {
        Some(bytes) => Ok(StoredComponents::decode(bytes.as_slice())?.components),
        None => Ok(Vec::new()),
    }
}

const PAGE_TOKEN_PREFIX: &str = "r1";

fn encode_page_token(created_at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}:{created_at}:{id}"))
}

fn decode_page_token(token: &str) -> Result<Option<(i64, String)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| OrchestratorError::InvalidPageToken)?;
    let text = String::from_utf8(bytes).map_err(|_| OrchestratorError::InvalidPageToken)?;
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(PAGE_TOKEN_PREFIX), Some(created), Some(id)) if !id.is_empty() => {
            let created = created.parse().map_err(|_| OrchestratorError::InvalidPageToken)?;
            Ok(Some((created, id.to_owned())))
        }
        _ => Err(OrchestratorError::InvalidPageToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let token = encode_page_token(1_700_000_000_123, "0b8c-uuid");
        assert_eq!(
            decode_page_token(&token).expect("ours"),
            Some((1_700_000_000_123, "0b8c-uuid".to_owned()))
        );
        assert_eq!(decode_page_token("").expect("empty"), None);
        for bad in ["!!", "eA", &URL_SAFE_NO_PAD.encode("u:alice")] {
            assert!(matches!(
                decode_page_token(bad),
                Err(OrchestratorError::InvalidPageToken)
            ));
        }
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let t = timestamp(1_700_000_000_123);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_000_000));
    }

    #[test]
    fn terminal_states_are_the_four_ends() {
        assert!(is_terminal(RunState::Stopped));
        assert!(is_terminal(RunState::Interrupted));
        assert!(!is_terminal(RunState::Pending));
        assert!(!is_terminal(RunState::Analyzing));
    }
}

/// Owner-only SQLite files (the same rule as the auth service's `files`).
pub(crate) mod private_sqlite {
    use std::{
        io,
        path::{Path, PathBuf},
    };

    /// The file of a `sqlite://` URL, or `None` for another database or an
    /// in-memory one.
    pub(crate) fn path(url: &str) -> Option<PathBuf> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// Creates the database file of `url` with mode 0600 when missing and
    /// tightens it and its companions; returns its path.
    pub(crate) fn prepare(url: &str) -> io::Result<Option<PathBuf>> {
        let Some(path) = path(url) else {
            return Ok(None);
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        drop(options.open(&path)?);
        tighten(&path)?;
        Ok(Some(path))
    }

    /// Sets the database and whichever of `-wal`, `-shm`, `-journal` exist to 0600.
    pub(crate) fn tighten(path: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let private = || std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(path, private())?;
            for suffix in ["-wal", "-shm", "-journal"] {
                let mut companion = path.as_os_str().to_owned();
                companion.push(suffix);
                match std::fs::set_permissions(Path::new(&companion), private()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        #[cfg(not(unix))]
        let _ = path;
        Ok(())
    }
}
