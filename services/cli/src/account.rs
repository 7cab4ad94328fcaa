//! `reporunner register | login | logout | whoami | usage | limits` and
//! `reporunner admin ...`: the account commands, as thin clients of
//! `reporunner.auth.v1`.

use std::{fmt::Write as _, io::BufRead as _};

use clap::{Args, Subcommand, ValueEnum};
use reporunner_auth::tier::{index_mode_name, tier_name};
use reporunner_proto::{
    auth::v1::{
        BlockUserRequest, CreateUserRequest, DeleteUserRequest, GetUsageRequest, GetUsageResponse,
        ListAuditEventsRequest, ListTierPoliciesRequest, ListUsersRequest, LoginRequest, LogoutRequest,
        RegisterRequest, SetTierRequest, TierPolicy, UnblockUserRequest, UsageKind, User, WhoAmIRequest,
    },
    common::v1::{IndexMode, Tier},
};

use crate::{
    output::table,
    session::{Session, bearer, describe},
};

/// How a command prints its answer.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The answer in the proto3 JSON mapping.
    Json,
}

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The server, e.g. http://127.0.0.1:50051 (default: the one you logged in to).
    #[arg(long, env = "REPORUNNER_SERVER", global = true)]
    pub server: Option<String>,
    /// `table` for people, `json` for the proto3 JSON mapping.
    #[arg(long, short, value_enum, default_value = "table", global = true)]
    pub output: Output,
}

/// Where a password comes from.
#[derive(Args, Debug, Clone)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

/// A tier an admin can give.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TierArg {
    Free,
    Tester,
    Advanced,
    Premium,
}

impl From<TierArg> for Tier {
    fn from(tier: TierArg) -> Self {
        match tier {
            TierArg::Free => Tier::Free,
            TierArg::Tester => Tier::Tester,
            TierArg::Advanced => Tier::Advanced,
            TierArg::Premium => Tier::Premium,
        }
    }
}

/// Reads a password without echo from the terminal, or from stdin with
/// `--password-stdin`. `confirm` asks twice.
pub fn read_password(args: &PasswordArgs, prompt: &str, confirm: bool) -> anyhow::Result<String> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let first = rpassword::prompt_password(prompt).map_err(|e| {
            anyhow::anyhow!("cannot prompt for a password ({e}); pipe it in with --password-stdin")
        })?;
        if confirm {
            let second = rpassword::prompt_password("Repeat password: ")
                .map_err(|e| anyhow::anyhow!("cannot prompt for a password: {e}"))?;
            if first != second {
                anyhow::bail!("the passwords do not match");
            }
        }
        first
    };
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    Ok(password)
}

/// `reporunner register`: creates a Free account, then logs in.
pub async fn register(client: &ClientArgs, username: &str, password: &PasswordArgs) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    let password = read_password(password, "Choose a password: ", true)?;
    let user = session
        .auth()
        .await?
        .register(RegisterRequest {
            username: username.to_string(),
            password: password.clone(),
        })
        .await
        .map_err(describe)?
        .into_inner()
        .user
        .unwrap_or_default();
    login_with(&mut session, username, &password).await?;
    match client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&user)?)?,
        Output::Table => crate::outln!(
            "registered {} ({}) on {} and logged in",
            user.username,
            tier_name(user.tier()),
            session.server()
        )?,
    }
    Ok(())
}

/// `reporunner login`.
pub async fn login(client: &ClientArgs, username: &str, password: &PasswordArgs) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    let password = read_password(password, "Password: ", false)?;
    let user = login_with(&mut session, username, &password).await?;
    match client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&user)?)?,
        Output::Table => crate::outln!(
            "logged in to {} as {} ({}); login stored in {}",
            session.server(),
            user.username,
            tier_name(user.tier()),
            session.credentials_path().display()
        )?,
    }
    Ok(())
}

async fn login_with(session: &mut Session, username: &str, password: &str) -> anyhow::Result<User> {
    let response = session
        .auth()
        .await?
        .login(LoginRequest {
            username: username.to_string(),
            password: password.to_string(),
        })
        .await
        .map_err(describe)?
        .into_inner();
    let tokens = response
        .tokens
        .ok_or_else(|| anyhow::anyhow!("the server's Login answer has no tokens"))?;
    let user = response.user.unwrap_or_default();
    session.save(&user.username, tokens)?;
    Ok(user)
}

/// `reporunner logout`: revokes the refresh token (or all of them) and
/// forgets the stored login. The login is forgotten even when the server
/// cannot be reached.
pub async fn logout(client: &ClientArgs, all: bool) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    let Some(credentials) = session.credentials().cloned() else {
        crate::outln!("not logged in to {}", session.server())?;
        return Ok(());
    };
    let auth = session.auth().await;
    let revoked = match auth {
        Ok(auth) => {
            session
                .call(|token| {
                    let mut auth = auth.clone();
                    let refresh_token = credentials.refresh_token.clone();
                    async move {
                        auth.logout(bearer(LogoutRequest { refresh_token, all }, &token)?)
                            .await
                    }
                })
                .await
        }
        Err(err) => Err(err),
    };
    session.forget()?;
    match revoked {
        Ok(_) => crate::outln!(
            "logged out of {}{}",
            session.server(),
            if all { " everywhere" } else { "" }
        )?,
        Err(err) => crate::outln!(
            "forgot the stored login; the server could not revoke it ({err:#}), it expires by itself"
        )?,
    }
    Ok(())
}

/// `reporunner whoami`.
pub async fn whoami(client: &ClientArgs) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    session.require_login()?;
    let auth = session.auth().await?;
    let response = session
        .call(|token| {
            let mut auth = auth.clone();
            async move { auth.who_am_i(bearer(WhoAmIRequest {}, &token)?).await }
        })
        .await?
        .into_inner();
    match client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?,
        Output::Table => {
            let user = response.user.unwrap_or_default();
            crate::outln!(
                "{} ({}) on {}",
                user.username,
                tier_name(user.tier()),
                session.server()
            )?;
            crate::outln!("id  {}", user.id)?;
        }
    }
    Ok(())
}

/// `reporunner limits`: the caller's tier policy, or with `all` every tier's
/// (which needs no login).
pub async fn limits(client: &ClientArgs, all: bool) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    if all {
        let response = session
            .auth()
            .await?
            .list_tier_policies(ListTierPoliciesRequest {})
            .await
            .map_err(describe)?
            .into_inner();
        match client.output {
            Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?,
            Output::Table => crate::out!("{}", render_tier_table(&response.policies))?,
        }
        return Ok(());
    }
    session.require_login()?;
    let auth = session.auth().await?;
    let response = session
        .call(|token| {
            let mut auth = auth.clone();
            async move { auth.who_am_i(bearer(WhoAmIRequest {}, &token)?).await }
        })
        .await?
        .into_inner();
    let policy = response.policy.unwrap_or_default();
    match client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&policy)?)?,
        Output::Table => crate::out!("{}", render_policy(&policy))?,
    }
    Ok(())
}

/// `reporunner usage [--user NAME]`: your own usage, or (admin) anyone's.
pub async fn usage(client: &ClientArgs, user: Option<&str>) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    session.require_login()?;
    let user_id = match user {
        Some(user) => resolve_user(&mut session, user).await?.id,
        None => String::new(),
    };
    let auth = session.auth().await?;
    let response = session
        .call(|token| {
            let mut auth = auth.clone();
            let user_id = user_id.clone();
            async move { auth.get_usage(bearer(GetUsageRequest { user_id }, &token)?).await }
        })
        .await?
        .into_inner();
    match client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?,
        Output::Table => crate::out!("{}", render_usage(&response))?,
    }
    Ok(())
}

/// `reporunner admin users ...`.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Every user, a page at a time.
    List {
        /// Users per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Follow every page (bounded at 100 pages).
        #[arg(long)]
        all: bool,
    },
    /// Create a user (any tier but admin).
    Create {
        username: String,
        #[arg(long, value_enum, default_value = "free")]
        tier: TierArg,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Block a user: their live tokens stop working on the next call.
    Block {
        /// A username or user id.
        user: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Unblock a user.
    Unblock { user: String },
    /// Delete a user and their tokens.
    Delete { user: String },
    /// Change a user's tier (up or down).
    #[command(alias = "set-tier", alias = "downgrade")]
    Upgrade {
        user: String,
        #[arg(long, value_enum)]
        tier: TierArg,
    },
}

/// Runs an admin users command.
pub async fn admin_users(client: &ClientArgs, command: UsersCommand) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    session.require_login()?;
    let admin = session.admin().await?;
    match command {
        UsersCommand::List { page_size, all } => {
            let mut users = Vec::new();
            let mut page_token = String::new();
            for _ in 0..100 {
                let response = session
                    .call(|token| {
                        let mut admin = admin.clone();
                        let page_token = page_token.clone();
                        async move {
                            admin
                                .list_users(bearer(
                                    ListUsersRequest {
                                        page_size,
                                        page_token,
                                    },
                                    &token,
                                )?)
                                .await
                        }
                    })
                    .await?
                    .into_inner();
                users.extend(response.users);
                page_token = response.next_page_token;
                if !all || page_token.is_empty() {
                    break;
                }
            }
            match client.output {
                Output::Json => {
                    let response = reporunner_proto::auth::v1::ListUsersResponse {
                        users,
                        next_page_token: page_token,
                    };
                    crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?;
                }
                Output::Table => {
                    crate::out!("{}", render_users(&users))?;
                    if !page_token.is_empty() {
                        crate::outln!("more users follow; use --all")?;
                    }
                }
            }
        }
        UsersCommand::Create {
            username,
            tier,
            password,
        } => {
            let password = read_password(&password, "Password for the new user: ", true)?;
            let tier = Tier::from(tier) as i32;
            let user = session
                .call(|token| {
                    let mut admin = admin.clone();
                    let (username, password) = (username.clone(), password.clone());
                    async move {
                        admin
                            .create_user(bearer(
                                CreateUserRequest {
                                    username,
                                    password,
                                    tier,
                                },
                                &token,
                            )?)
                            .await
                    }
                })
                .await?
                .into_inner()
                .user
                .unwrap_or_default();
            print_user(client.output, "created", &user)?;
        }
        UsersCommand::Block { user, reason } => {
            let user_id = resolve_user(&mut session, &user).await?.id;
            let user = session
                .call(|token| {
                    let mut admin = admin.clone();
                    let (user_id, reason) = (user_id.clone(), reason.clone());
                    async move {
                        admin
                            .block_user(bearer(BlockUserRequest { user_id, reason }, &token)?)
                            .await
                    }
                })
                .await?
                .into_inner()
                .user
                .unwrap_or_default();
            print_user(client.output, "blocked", &user)?;
        }
        UsersCommand::Unblock { user } => {
            let user_id = resolve_user(&mut session, &user).await?.id;
            let user = session
                .call(|token| {
                    let mut admin = admin.clone();
                    let user_id = user_id.clone();
                    async move {
                        admin
                            .unblock_user(bearer(UnblockUserRequest { user_id }, &token)?)
                            .await
                    }
                })
                .await?
                .into_inner()
                .user
                .unwrap_or_default();
            print_user(client.output, "unblocked", &user)?;
        }
        UsersCommand::Delete { user } => {
            let target = resolve_user(&mut session, &user).await?;
            session
                .call(|token| {
                    let mut admin = admin.clone();
                    let user_id = target.id.clone();
                    async move {
                        admin
                            .delete_user(bearer(DeleteUserRequest { user_id }, &token)?)
                            .await
                    }
                })
                .await?;
            match client.output {
                Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&target)?)?,
                Output::Table => crate::outln!("deleted {} ({})", target.username, target.id)?,
            }
        }
        UsersCommand::Upgrade { user, tier } => {
            let user_id = resolve_user(&mut session, &user).await?.id;
            let tier = Tier::from(tier) as i32;
            let user = session
                .call(|token| {
                    let mut admin = admin.clone();
                    let user_id = user_id.clone();
                    async move {
                        admin
                            .set_tier(bearer(SetTierRequest { user_id, tier }, &token)?)
                            .await
                    }
                })
                .await?
                .into_inner()
                .user
                .unwrap_or_default();
            print_user(client.output, "tier set", &user)?;
        }
    }
    Ok(())
}

/// `reporunner admin audit`: admin actions and security events, newest first.
pub async fn admin_audit(client: &ClientArgs, user: Option<&str>, limit: u32) -> anyhow::Result<()> {
    let mut session = Session::open(client.server.clone())?;
    session.require_login()?;
    let target_id = match user {
        Some(user) => resolve_user(&mut session, user).await?.id,
        None => String::new(),
    };
    let admin = session.admin().await?;
    let response = session
        .call(|token| {
            let mut admin = admin.clone();
            let target_id = target_id.clone();
            async move {
                admin
                    .list_audit_events(bearer(
                        ListAuditEventsRequest {
                            page_size: limit,
                            page_token: String::new(),
                            target_id,
                        },
                        &token,
                    )?)
                    .await
            }
        })
        .await?
        .into_inner();
    match client.output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(&response)?)?,
        Output::Table => {
            let rows: Vec<Vec<String>> = response
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.time.map(|t| t.to_string()).unwrap_or_default(),
                        e.action.clone(),
                        e.actor_id.clone(),
                        e.target_id.clone(),
                        e.detail.clone(),
                    ]
                })
                .collect();
            crate::out!(
                "{}",
                table(&["TIME", "ACTION", "ACTOR", "TARGET", "DETAIL"], &rows)
            )?;
        }
    }
    Ok(())
}

/// A user by id, or by username through the (paged, bounded) user list.
async fn resolve_user(session: &mut Session, user: &str) -> anyhow::Result<User> {
    let admin = session.admin().await?;
    let mut page_token = String::new();
    for _ in 0..1000 {
        let response = session
            .call(|token| {
                let mut admin = admin.clone();
                let page_token = page_token.clone();
                async move {
                    admin
                        .list_users(bearer(
                            ListUsersRequest {
                                page_size: 1000,
                                page_token,
                            },
                            &token,
                        )?)
                        .await
                }
            })
            .await?
            .into_inner();
        if let Some(found) = response
            .users
            .into_iter()
            .find(|u| u.id == user || u.username == user)
        {
            return Ok(found);
        }
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    anyhow::bail!("no user named or with id {user:?}")
}

fn print_user(output: Output, verb: &str, user: &User) -> anyhow::Result<()> {
    match output {
        Output::Json => crate::outln!("{}", reporunner_proto::json::to_string_pretty(user)?)?,
        Output::Table => crate::outln!(
            "{verb}: {} ({}, {}{})",
            user.username,
            user.id,
            tier_name(user.tier()),
            if user.blocked { ", blocked" } else { "" }
        )?,
    }
    Ok(())
}

/// The `reporunner users list` table.
pub fn render_users(users: &[User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.username.clone(),
                tier_name(u.tier()).to_string(),
                if u.blocked { "blocked" } else { "active" }.to_string(),
                u.id.clone(),
            ]
        })
        .collect();
    table(&["USERNAME", "TIER", "STATE", "ID"], &rows)
}

/// The `reporunner limits` table.
pub fn render_policy(policy: &TierPolicy) -> String {
    let modes: Vec<&str> = policy
        .index_modes
        .iter()
        .map(|m| index_mode_name(IndexMode::try_from(*m).unwrap_or(IndexMode::Unspecified)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "Tier                    {}", tier_name(policy.tier()));
    let _ = writeln!(
        out,
        "Metered requests / hour {}",
        policy.metered_requests_per_hour
    );
    let _ = writeln!(out, "Concurrent runs         {}", policy.concurrent_runs);
    let _ = writeln!(
        out,
        "Index modes             {}{}",
        modes.join(", "),
        if policy.vector_needs_recommendation {
            " (vector when the host recommends it)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Self-healing attempts   {}", policy.max_heal_attempts);
    let _ = writeln!(
        out,
        "Workspace size          {} MiB",
        policy.max_workspace_bytes >> 20
    );
    let _ = writeln!(out, "Run time                {} min", policy.max_run_seconds / 60);
    if let Some(limits) = &policy.step_limits {
        let _ = writeln!(
            out,
            "Per step (sandbox)      {} MiB memory, {} processes, {} open files, {} MiB files, {} MiB installed",
            limits.memory_bytes >> 20,
            limits.max_processes,
            limits.max_open_files,
            limits.max_file_bytes >> 20,
            limits.max_disk_bytes >> 20
        );
    }
    let _ = writeln!(
        out,
        "Plugins                 {}",
        if policy.plugins { "called" } else { "not called" }
    );
    out
}

/// The `reporunner limits --all` table.
pub fn render_tier_table(policies: &[TierPolicy]) -> String {
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| {
            let modes: Vec<&str> = p
                .index_modes
                .iter()
                .map(|m| index_mode_name(IndexMode::try_from(*m).unwrap_or(IndexMode::Unspecified)))
                .collect();
            vec![
                tier_name(p.tier()).to_string(),
                p.metered_requests_per_hour.to_string(),
                p.concurrent_runs.to_string(),
                modes.join(","),
                p.max_heal_attempts.to_string(),
                format!("{} MiB", p.max_workspace_bytes >> 20),
                format!("{} min", p.max_run_seconds / 60),
            ]
        })
        .collect();
    table(
        &[
            "TIER",
            "REQUESTS/H",
            "RUNS",
            "INDEX",
            "HEALS",
            "WORKSPACE",
            "RUN TIME",
        ],
        &rows,
    )
}

/// The `reporunner usage` table.
pub fn render_usage(usage: &GetUsageResponse) -> String {
    let rows: Vec<Vec<String>> = usage
        .counters
        .iter()
        .map(|c| {
            vec![
                usage_kind_name(c.kind).to_string(),
                c.last_hour.to_string(),
                c.total.to_string(),
            ]
        })
        .collect();
    let mut out = table(&["KIND", "LAST HOUR", "TOTAL"], &rows);
    let _ = writeln!(
        out,
        "metered requests left this hour: {} of {}",
        usage.metered_remaining, usage.metered_limit_per_hour
    );
    out
}

fn usage_kind_name(kind: i32) -> &'static str {
    match UsageKind::try_from(kind).unwrap_or(UsageKind::Unspecified) {
        UsageKind::Unspecified => "unspecified",
        UsageKind::MeteredRequest => "metered requests",
        UsageKind::RunCreated => "runs created",
        UsageKind::AgentCall => "agent calls",
        UsageKind::Search => "searches",
        UsageKind::Index => "index builds",
    }
}

#[cfg(test)]
mod tests {
    use reporunner_proto::auth::v1::UsageCounter;

    use super::*;

    #[test]
    fn usage_table_names_each_kind_and_the_quota_left() {
        let shown = render_usage(&GetUsageResponse {
            user_id: "u1".into(),
            counters: vec![UsageCounter {
                kind: UsageKind::RunCreated as i32,
                last_hour: 2,
                total: 7,
            }],
            metered_limit_per_hour: 10,
            metered_remaining: 8,
        });
        assert!(shown.contains("runs created"), "{shown}");
        assert!(shown.contains("8 of 10"), "{shown}");
    }

    #[test]
    fn policy_table_shows_limits_and_modes() {
        let shown = render_policy(&TierPolicy {
            tier: Tier::Free as i32,
            metered_requests_per_hour: 10,
            concurrent_runs: 1,
            index_modes: vec![IndexMode::Text as i32],
            vector_needs_recommendation: false,
            max_heal_attempts: 2,
            max_workspace_bytes: 512 << 20,
            max_run_seconds: 1800,
            step_limits: Some(reporunner_proto::common::v1::StepLimits {
                memory_bytes: 2 << 30,
                max_processes: 512,
                max_open_files: 4096,
                max_file_bytes: 4 << 30,
                cpu_millis: 1000,
                max_disk_bytes: 4 << 30,
            }),
            plugins: false,
        });
        assert!(shown.contains("free"), "{shown}");
        assert!(shown.contains("Plugins                 not called"), "{shown}");
        assert!(shown.contains("10"), "{shown}");
        assert!(shown.contains("512 MiB"), "{shown}");
        assert!(shown.contains("30 min"), "{shown}");
        assert!(shown.contains("2048 MiB memory, 512 processes"), "{shown}");
    }
}
