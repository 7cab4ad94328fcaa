//! The auth service's settings, tier policy included (policy is data).

use std::{
    io::{Read, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use reporunner_proto::{
    auth::v1::TierPolicy,
    common::v1::{IndexMode, Tier},
};
use serde::{Deserialize, Serialize};

use crate::{
    error::{AuthError, Result},
    tier::{ALL_TIERS, index_mode_name, parse_index_mode, parse_tier, tier_name},
};

/// The file name of the generated signing key under the data directory.
pub const JWT_KEY_FILE: &str = "jwt.key";
/// The length of a generated signing key, in bytes.
pub const JWT_KEY_LEN: usize = 64;
/// The shortest `jwt_secret` accepted, in bytes (HS256 wants at least 256 bits).
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Settings of the auth service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A sea-orm database URL (`postgres://...` or `sqlite://...`). Empty means
    /// the SQLite file `<data_dir>/auth.db`; see [`AuthConfig::database_url`].
    pub database_url: String,
    /// The `iss` of issued access tokens, checked on every token.
    pub jwt_issuer: String,
    /// The `aud` of issued access tokens, checked on every token.
    pub jwt_audience: String,
    /// Lifetime of an access token, in seconds.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Lifetime of a refresh token, in seconds.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// The HS256 signing secret (at least 32 bytes). Unset means a random key
    /// generated once at `<data_dir>/jwt.key` (mode 0600) and read back later.
    pub jwt_secret: Option<String>,
    /// How many argon2id hashes may run at once (each takes ~19 MiB).
    pub max_concurrent_hashes: usize,
    /// Whether anyone may call Register ("open") or only the admin creates
    /// accounts ("closed").
    pub registration: RegistrationMode,
    /// Registrations one client address may attempt per hour.
    pub registrations_per_address_per_hour: u32,
    /// Failed logins one client address may make per hour, across all
    /// accounts; past it that address (only) is refused until the oldest
    /// failure is an hour old.
    pub login_failures_per_address_per_hour: u32,
    /// After a failed login, the same account is not checked again from the
    /// same address for this long, doubled with every further failure of
    /// that pair in the hour (other addresses are not slowed down).
    #[serde(with = "humantime_serde")]
    pub login_delay_base: Duration,
    /// The longest such delay; 0 turns the delay off.
    #[serde(with = "humantime_serde")]
    pub login_delay_max: Duration,
    /// Failures of one account from one address before the delay starts:
    /// the owner who mistypes a password once or twice is not made to wait.
    pub login_free_failures: u64,
    /// Password checks of one account that may run at once; more wait.
    pub login_concurrent_checks_per_account: usize,
    /// Peers whose `x-forwarded-for` is believed (reverse proxies). From any
    /// other peer the header is ignored and the peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long Authorize may use what it read of a user (tier, blocked)
    /// before reading it again; 0 reads it on every call. A block, tier
    /// change or delete made through this replica applies at once; one made
    /// through another replica applies within this time.
    #[serde(with = "humantime_serde")]
    pub authorize_cache_ttl: Duration,
    /// The most users whose reads Authorize keeps.
    pub authorize_cache_users: usize,
    /// The limits of each tier.
    pub tiers: Vec<TierPolicyConfig>,
}

/// Who may register accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone may call Register (rate-limited per address).
    #[default]
    Open,
    /// Register is refused; the admin creates accounts with CreateUser.
    Closed,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            database_url: String::new(),
            jwt_issuer: "reporunner".into(),
            jwt_audience: "reporunner".into(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            jwt_secret: None,
            max_concurrent_hashes: 2,
            registration: RegistrationMode::Open,
            registrations_per_address_per_hour: 5,
            login_failures_per_address_per_hour: 100,
            login_delay_base: Duration::from_millis(250),
            login_delay_max: Duration::from_secs(60),
            login_free_failures: 3,
            login_concurrent_checks_per_account: 4,
            trusted_proxies: Vec::new(),
            authorize_cache_ttl: Duration::from_millis(500),
            authorize_cache_users: 100_000,
            tiers: default_tiers(),
        }
    }
}

/// The limits of one tier, as written in a config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPolicyConfig {
    /// "free", "tester", "advanced", "premium" or "admin".
    #[serde(with = "tier_serde")]
    pub tier: Tier,
    pub metered_requests_per_hour: u32,
    pub concurrent_runs: u32,
    /// "text", "vector", "hybrid".
    #[serde(with = "index_modes_serde")]
    pub index_modes: Vec<IndexMode>,
    /// Vector search only when the env-detector recommends it.
    #[serde(default)]
    pub vector_needs_recommendation: bool,
    pub max_heal_attempts: u32,
    pub max_workspace_bytes: u64,
    pub max_run_seconds: u32,
    /// The sandbox limits of every step that runs the repository's code.
    #[serde(default)]
    pub step_limits: StepLimitsConfig,
    /// Whether the orchestrator's plugins (`[[orchestrator.plugins]]`) are
    /// called on this tier's runs; default true: plugins are the operator's
    /// own policy.
    #[serde(default = "yes")]
    pub plugins: bool,
}

fn yes() -> bool {
    true
}

/// A tier's sandbox limits, as written in a config file; 0 means none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepLimitsConfig {
    pub memory_mib: u64,
    pub max_processes: u32,
    pub max_open_files: u32,
    pub max_file_mib: u64,
    pub cpu_millis: u32,
    pub max_disk_mib: u64,
}

impl Default for StepLimitsConfig {
    /// The Free tier's.
    fn default() -> Self {
        Self::scaled(1)
    }
}

impl StepLimitsConfig {
    /// `factor` times the Free tier's memory, processes and CPU.
    fn scaled(factor: u32) -> Self {
        Self {
            memory_mib: 2_048 * u64::from(factor),
            max_processes: 512 * factor,
            max_open_files: 4_096,
            max_file_mib: 4_096,
            cpu_millis: 1_000 * factor,
            max_disk_mib: 4_096 * u64::from(factor),
        }
    }

    pub fn to_proto(self) -> reporunner_proto::common::v1::StepLimits {
        reporunner_proto::common::v1::StepLimits {
            memory_bytes: self.memory_mib * MIB,
            max_processes: self.max_processes,
            max_open_files: self.max_open_files,
            max_file_bytes: self.max_file_mib * MIB,
            cpu_millis: self.cpu_millis,
            max_disk_bytes: self.max_disk_mib * MIB,
        }
    }
}

impl TierPolicyConfig {
    /// The policy as the contract's message.
    pub fn to_proto(&self) -> TierPolicy {
        TierPolicy {
            tier: self.tier.into(),
            metered_requests_per_hour: self.metered_requests_per_hour,
            concurrent_runs: self.concurrent_runs,
            index_modes: self.index_modes.iter().map(|m| (*m).into()).collect(),
            vector_needs_recommendation: self.vector_needs_recommendation,
            max_heal_attempts: self.max_heal_attempts,
            max_workspace_bytes: self.max_workspace_bytes,
            max_run_seconds: self.max_run_seconds,
            step_limits: Some(self.step_limits.to_proto()),
            plugins: self.plugins,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// The tier table of DESIGN.md. Heal attempts, workspace size and run time
/// are this crate's defaults (DESIGN.md does not fix them).
pub fn default_tiers() -> Vec<TierPolicyConfig> {
    let policy =
        |tier, per_hour, runs, modes: &[IndexMode], needs_rec, heal, ws_mib, secs: u32| TierPolicyConfig {
            tier,
            metered_requests_per_hour: per_hour,
            concurrent_runs: runs,
            index_modes: modes.to_vec(),
            vector_needs_recommendation: needs_rec,
            max_heal_attempts: heal,
            max_workspace_bytes: ws_mib * MIB,
            max_run_seconds: secs,
            // Free: 2 GiB and 512 processes per step; each tier up doubles,
            // up to 4x for premium and 8x for the admin.
            step_limits: StepLimitsConfig::scaled(match tier {
                Tier::Free | Tier::Unspecified => 1,
                Tier::Tester | Tier::Advanced => 2,
                Tier::Premium => 4,
                Tier::Admin => 8,
            }),
            plugins: true,
        };
    use IndexMode::{Hybrid, Text, Vector};
    vec![
        policy(Tier::Free, 10, 1, &[Text], false, 2, 512, 1_800),
        policy(Tier::Tester, 100, 2, &[Text], false, 3, 1_024, 3_600),
        policy(Tier::Advanced, 50, 2, &[Text, Vector], true, 3, 2_048, 3_600),
        policy(
            Tier::Premium,
            200,
            5,
            &[Text, Vector, Hybrid],
            false,
            5,
            5_120,
            4 * 3_600,
        ),
        policy(
            Tier::Admin,
            1_000,
            10,
            &[Text, Vector, Hybrid],
            false,
            10,
            20_480,
            24 * 3_600,
        ),
    ]
}

impl AuthConfig {
    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.refresh_ttl
    }

    /// How long the same account is not checked again from the same
    /// address after `failures` failed logins of that pair in the hour:
    /// nothing after none, then the base, doubled per failure, capped.
    pub fn login_delay(&self, failures: u64) -> Duration {
        if failures <= self.login_free_failures || self.login_delay_max.is_zero() {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(failures - self.login_free_failures - 1)
            .unwrap_or(u32::MAX)
            .min(63);
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let base = millis(self.login_delay_base);
        let ms = base
            .checked_shl(doublings)
            .filter(|ms| ms >> doublings == base)
            .unwrap_or(u64::MAX)
            .min(millis(self.login_delay_max));
        Duration::from_millis(ms)
    }

    /// The database URL, with the empty default resolved to `<data_dir>/auth.db`
    /// (created when missing).
    pub fn database_url(&self, data_dir: &Path) -> String {
        if self.database_url.trim().is_empty() {
            format!("sqlite://{}?mode=rwc", data_dir.join("auth.db").display())
        } else {
            self.database_url.clone()
        }
    }

    /// The policy of `tier`, if configured (validated configs have all).
    pub fn policy(&self, tier: Tier) -> Option<&TierPolicyConfig> {
        self.tiers.iter().find(|p| p.tier == tier)
    }

    /// The signing key: `jwt_secret` when set, else `<data_dir>/jwt.key`,
    /// created with 64 random bytes and mode 0600 the first time.
    pub fn signing_key(&self, data_dir: &Path) -> Result<Vec<u8>> {
        match &self.jwt_secret {
            Some(secret) => Ok(secret.as_bytes().to_vec()),
            None => load_or_create_key(&data_dir.join(JWT_KEY_FILE)),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(AuthError::InvalidConfig(msg));
        if self.jwt_issuer.trim().is_empty() || self.jwt_audience.trim().is_empty() {
            return invalid("jwt_issuer and jwt_audience must not be empty".into());
        }
        if self.access_ttl.is_zero() || self.access_ttl > Duration::from_secs(24 * 3600) {
            return invalid(format!(
                "access_ttl is {:?}; it must be above zero and at most 24h",
                self.access_ttl
            ));
        }
        if self.refresh_ttl < self.access_ttl || self.refresh_ttl > Duration::from_secs(365 * 24 * 3600) {
            return invalid(format!(
                "refresh_ttl is {:?}; it must be at least access_ttl and at most a year",
                self.refresh_ttl
            ));
        }
        if let Some(secret) = &self.jwt_secret
            && secret.len() < MIN_JWT_SECRET_LEN
        {
            return invalid(format!(
                "jwt_secret has {} bytes; it needs at least {MIN_JWT_SECRET_LEN}",
                secret.len()
            ));
        }
        if self.authorize_cache_ttl > Duration::from_secs(1) {
            return invalid(format!(
                "authorize_cache_ttl is {:?}; it must be at most 1s (a block must apply on every replica within it)",
                self.authorize_cache_ttl
            ));
        }
        if self.authorize_cache_users == 0 {
            return invalid("authorize_cache_users must be above zero".into());
        }
        if !(1..=64).contains(&self.max_concurrent_hashes) {
            return invalid(format!(
                "max_concurrent_hashes is {}; it must be between 1 and 64",
                self.max_concurrent_hashes
            ));
        }
        if self.registrations_per_address_per_hour == 0 || self.login_failures_per_address_per_hour == 0 {
            return invalid(
                "registrations_per_address_per_hour and login_failures_per_address_per_hour must be at least 1 \
                 (close registration with registration = \"closed\")"
                    .into(),
            );
        }
        if self.login_delay_max > Duration::from_secs(24 * 3_600)
            || (!self.login_delay_max.is_zero() && self.login_delay_base > self.login_delay_max)
        {
            return invalid(format!(
                "login_delay_base is {:?} and login_delay_max {:?}; the base must not exceed the maximum (\"0s\" turns the delay off), \
                 which must be at most a day",
                self.login_delay_base, self.login_delay_max
            ));
        }
        if !(1..=64).contains(&self.login_concurrent_checks_per_account) {
            return invalid(format!(
                "login_concurrent_checks_per_account is {}; it must be between 1 and 64",
                self.login_concurrent_checks_per_account
            ));
        }
        for tier in ALL_TIERS {
            let count = self.tiers.iter().filter(|p| p.tier == tier).count();
            if count != 1 {
                return invalid(format!(
                    "tier `{}` is configured {count} times; every tier needs exactly one policy",
                    tier_name(tier)
                ));
            }
        }
        for policy in &self.tiers {
            if policy.tier == Tier::Unspecified {
                return invalid("a tier policy names no tier".into());
            }
            if policy.index_modes.is_empty() || policy.index_modes.contains(&IndexMode::Unspecified) {
                return invalid(format!(
                    "tier `{}` needs at least one index mode out of text, vector, hybrid",
                    tier_name(policy.tier)
                ));
            }
        }
        Ok(())
    }
}

fn load_or_create_key(path: &Path) -> Result<Vec<u8>> {
    let io_err = |source| AuthError::Io {
        path: PathBuf::from(path),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(crate::files::PRIVATE_FILE_MODE);
    }
    match options.open(path) {
        Ok(mut file) => {
            let mut key = vec![0u8; JWT_KEY_LEN];
            rand::fill(&mut key[..]);
            file.write_all(&key).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            tracing::info!(path = %path.display(), "generated a new token signing key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            crate::files::set_mode(path, crate::files::PRIVATE_FILE_MODE).map_err(io_err)?;
            let mut key = Vec::with_capacity(JWT_KEY_LEN);
            std::fs::File::open(path)
                .map_err(io_err)?
                .take(4096)
                .read_to_end(&mut key)
                .map_err(io_err)?;
            if key.len() < MIN_JWT_SECRET_LEN {
                return Err(AuthError::InvalidConfig(format!(
                    "{} holds {} bytes; a signing key needs at least {MIN_JWT_SECRET_LEN}",
                    path.display(),
                    key.len()
                )));
            }
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

mod tier_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(tier: &Tier, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(tier_name(*tier))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Tier, D::Error> {
        let name = String::deserialize(d)?;
        parse_tier(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown tier `{name}`; use free, tester, advanced, premium or admin"
            ))
        })
    }
}

mod index_modes_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(modes: &[IndexMode], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(modes.iter().map(|m| index_mode_name(*m)))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IndexMode>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|name| {
                parse_index_mode(name).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "unknown index mode `{name}`; use text, vector or hybrid"
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_design_table() {
        let config = AuthConfig::default();
        config.validate().unwrap();
        let free = config.policy(Tier::Free).unwrap();
        assert_eq!((free.metered_requests_per_hour, free.concurrent_runs), (10, 1));
        assert_eq!(free.index_modes, [IndexMode::Text]);
        let advanced = config.policy(Tier::Advanced).unwrap();
        assert_eq!(advanced.metered_requests_per_hour, 50);
        assert!(advanced.vector_needs_recommendation);
        assert!(advanced.index_modes.contains(&IndexMode::Vector));
        let premium = config.policy(Tier::Premium).unwrap();
        assert_eq!(
            (premium.metered_requests_per_hour, premium.concurrent_runs),
            (200, 5)
        );
        assert_eq!(premium.index_modes.len(), 3);
        let admin = config.policy(Tier::Admin).unwrap();
        assert_eq!(
            (admin.metered_requests_per_hour, admin.concurrent_runs),
            (1_000, 10)
        );
        assert_eq!(
            config.policy(Tier::Tester).unwrap().metered_requests_per_hour,
            100
        );
        assert_eq!(config.access_ttl(), Duration::from_secs(900));
        assert_eq!(config.refresh_ttl(), Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn policy_is_data_read_from_config_text() {
        let mut tiers = serde_json::to_value(default_tiers()).unwrap();
        tiers[0]["metered_requests_per_hour"] = 3.into();
        let text = serde_json::json!({ "tiers": tiers, "access_ttl": "1m" }).to_string();
        let config: AuthConfig = serde_json::from_str(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.policy(Tier::Free).unwrap().metered_requests_per_hour, 3);
        assert_eq!(config.access_ttl, Duration::from_secs(60));
        assert_eq!(config.jwt_issuer, "reporunner");
        assert_eq!(
            config.policy(Tier::Free).unwrap().to_proto().index_modes,
            [IndexMode::Text as i32]
        );
    }

    #[test]
    fn unknown_fields_and_names_are_refused() {
        let err = serde_json::from_str::<AuthConfig>(r#"{"jwt_secrt": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("jwt_secrt"), "{err}");
        let mut tiers = serde_json::to_value(default_tiers()).unwrap();
        tiers[0]["tier"] = "gold".into();
        let err = serde_json::from_value::<AuthConfig>(serde_json::json!({ "tiers": tiers })).unwrap_err();
        assert!(err.to_string().contains("gold"), "{err}");
    }

    #[test]
    fn validation_names_the_problem() {
        let mut config = AuthConfig::default();
        config.tiers.retain(|p| p.tier != Tier::Premium);
        assert!(config.validate().unwrap_err().to_string().contains("premium"));
        let config = AuthConfig {
            jwt_secret: Some("short".into()),
            ..AuthConfig::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("jwt_secret"));
    }

    #[test]
    fn database_url_defaults_to_a_sqlite_file_in_the_data_dir() {
        let config = AuthConfig::default();
        assert_eq!(
            config.database_url(Path::new("/var/lib/rr")),
            "sqlite:///var/lib/rr/auth.db?mode=rwc"
        );
        let config = AuthConfig {
            database_url: "postgres://db/auth".into(),
            ..AuthConfig::default()
        };
        assert_eq!(config.database_url(Path::new("/x")), "postgres://db/auth");
    }

    #[test]
    fn login_delay_doubles_per_failure_up_to_the_maximum() {
        let config = AuthConfig {
            login_free_failures: 0,
            ..AuthConfig::default()
        };
        assert_eq!(config.login_delay(0), Duration::ZERO);
        assert_eq!(config.login_delay(1), Duration::from_millis(250));
        assert_eq!(config.login_delay(2), Duration::from_millis(500));
        assert_eq!(config.login_delay(5), Duration::from_secs(4));
        assert_eq!(config.login_delay(9), Duration::from_secs(60));
        // By default a mistyped password or two costs no wait.
        let default = AuthConfig::default();
        assert_eq!(default.login_delay(3), Duration::ZERO);
        assert_eq!(default.login_delay(4), Duration::from_millis(250));
        assert_eq!(config.login_delay(u64::MAX), Duration::from_secs(60));
        let off = AuthConfig {
            login_delay_max: Duration::from_millis(0),
            ..AuthConfig::default()
        };
        off.validate().unwrap();
        assert_eq!(off.login_delay(50), Duration::ZERO);
        let bad = AuthConfig {
            login_delay_base: Duration::from_secs(10),
            login_delay_max: Duration::from_secs(1),
            ..AuthConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("login_delay"));
    }

    #[test]
    fn registration_and_proxies_are_read_from_config_text() {
        let config: AuthConfig =
            serde_json::from_str(r#"{"registration": "closed", "trusted_proxies": ["10.0.0.1", "::1"]}"#)
                .unwrap();
        assert_eq!(config.registration, RegistrationMode::Closed);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(AuthConfig::default().registration, RegistrationMode::Open);
        assert!(serde_json::from_str::<AuthConfig>(r#"{"registration": "invite"}"#).is_err());
    }

    #[test]
    fn signing_key_is_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuthConfig::default();
        let first = config.signing_key(dir.path()).unwrap();
        assert_eq!(first.len(), JWT_KEY_LEN);
        assert_ne!(first, vec![0u8; JWT_KEY_LEN]);
        #[cfg(unix)]
        let mode = |path: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join(JWT_KEY_FILE);
            assert_eq!(mode(&key), 0o600);
            // A key left readable by others is tightened when read.
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let second = config.signing_key(dir.path()).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        assert_eq!(mode(&dir.path().join(JWT_KEY_FILE)), 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(config.signing_key(other.path()).unwrap(), first);

        let config = AuthConfig {
            jwt_secret: Some("s".repeat(40)),
            ..AuthConfig::default()
        };
        assert_eq!(
            config.signing_key(dir.path()).unwrap(),
            "s".repeat(40).into_bytes()
        );
    }
}
