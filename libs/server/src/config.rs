//! Layered configuration: defaults < TOML file < `REPORUNNER_*` env < flags.
//!
//! Environment keys map to fields by lower-casing and splitting on `__`, so
//! `REPORUNNER_DATA_DIR` sets `data_dir` and `REPORUNNER_CLIENT__CONNECT_TIMEOUT`
//! sets `client.connect_timeout`.
//!
//! Durations are humantime strings (`"30s"`, `"1500ms"`, `"2h 30m"`). Keys that
//! used to take a number of milliseconds or seconds (`connect_timeout_ms`,
//! `stop_grace_seconds`, `access_ttl_secs`) are refused, in a file or in the
//! environment, with a message naming the key that replaced them.

use std::{path::Path, time::Duration};

use figment::{
    Figment, Provider,
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Value},
};
use serde::{Serialize, de::DeserializeOwned};

/// Formats a duration as config takes it (`"5m 30s"`), for messages.
pub use humantime_serde::re::humantime::format_duration;

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "REPORUNNER_";

/// `REPORUNNER_*` variables that belong to the command line (which file,
/// which server, which login), not to service settings; the loader skips them.
pub const CLI_ENV_KEYS: &[&str] = &["CONFIG", "SERVER", "TOKEN", "CREDENTIALS"];

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: String },
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A key that took a number of milliseconds or seconds, now a duration
    /// under a key without the unit.
    #[error("{origin}: {old} is no longer read; use {new}")]
    RenamedKey {
        /// Where the key was set (`config file <path>`, `environment`).
        origin: String,
        /// The old key as it was written (`runner.stop_grace_ms`, `REPORUNNER_RUNNER__STOP_GRACE_MS`).
        old: String,
        /// The new key with the old value as a duration (`runner.stop_grace = "5s"`).
        new: String,
    },
}

/// Unit suffixes of keys that were renamed when durations became humantime
/// strings, with the unit their numbers were in.
const UNIT_SUFFIXES: [(&str, Duration); 3] = [
    ("_ms", Duration::from_millis(1)),
    ("_secs", Duration::from_secs(1)),
    ("_seconds", Duration::from_secs(1)),
];

/// Loads `T` from its defaults, then `file` (when given), then the
/// environment, then `flags` (fields of `flags` that serialize to nothing,
/// e.g. `None` with `skip_serializing_if`, leave lower layers alone).
pub fn load<T, F>(file: Option<&Path>, flags: &F) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    load_with_env(file, flags, ENV_PREFIX)
}

fn load_with_env<T, F>(file: Option<&Path>, flags: &F, prefix: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    let known = Value::serialize(T::default()).map_err(|err| ConfigError::Invalid(Box::new(err)))?;
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile {
                path: path.display().to_string(),
            });
        }
        let toml = Toml::file(path);
        refuse_renamed_keys(&known, &toml, &|old, new, example| ConfigError::RenamedKey {
            origin: format!("config file {}", path.display()),
            old: old.join("."),
            new: format!("{} = \"{example}\"", new.join(".")),
        })?;
        figment = figment.merge(toml);
    }
    let env = Env::prefixed(prefix).ignore(CLI_ENV_KEYS).split("__");
    refuse_renamed_keys(&known, &env, &|old, new, example| {
        let var = |path: &[&str]| format!("{prefix}{}", path.join("__").to_uppercase());
        ConfigError::RenamedKey {
            origin: "environment".into(),
            old: var(old),
            // A value with a space needs quotes in a shell.
            new: if example.contains(' ') {
                format!("{}=\"{example}\"", var(new))
            } else {
                format!("{}={example}", var(new))
            },
        }
    })?;
    figment
        .merge(env)
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|err| ConfigError::Invalid(Box::new(err)))
}

/// Builds the error for a renamed key: the old key's path, the new key's
/// path, and the old value as a humantime string.
type RenamedKeyError<'a> = dyn Fn(&[&str], &[&str], &str) -> ConfigError + 'a;

/// Refuses keys of `layer` that `known` (the defaults, serialized) does not
/// have but has without their unit suffix: `stop_grace_ms` where
/// `stop_grace` is a setting.
fn refuse_renamed_keys(
    known: &Value,
    layer: &impl Provider,
    error: &RenamedKeyError<'_>,
) -> Result<(), ConfigError> {
    let data = layer.data().map_err(|err| ConfigError::Invalid(Box::new(err)))?;
    let Value::Dict(_, known) = known else {
        return Ok(());
    };
    for dict in data.values() {
        check_dict(known, dict, &mut Vec::new(), error)?;
    }
    Ok(())
}

fn check_dict<'k>(
    known: &Dict,
    given: &'k Dict,
    path: &mut Vec<&'k str>,
    error: &RenamedKeyError<'_>,
) -> Result<(), ConfigError> {
    for (key, value) in given {
        match known.get(key) {
            Some(Value::Dict(_, known)) => {
                if let Value::Dict(_, given) = value {
                    path.push(key);
                    check_dict(known, given, path, error)?;
                    path.pop();
                }
            }
            Some(_) => {}
            None => {
                let renamed = UNIT_SUFFIXES.iter().find_map(|(suffix, unit)| {
                    let new = key.strip_suffix(suffix)?;
                    // Durations serialize as humantime strings.
                    known
                        .get(new)
                        .filter(|default| default.as_str().is_some())
                        .map(|default| (new, *unit, default))
                });
                if let Some((new, unit, default)) = renamed {
                    // The old number in the new form; a value that is not a
                    // number shows the default instead.
                    let example = value
                        .to_num_lossy()
                        .and_then(|n| n.to_u128_lossy())
                        .and_then(|n| u32::try_from(n).ok())
                        .map(|n| format_duration(unit * n).to_string())
                        .or_else(|| default.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    let old_path: Vec<&str> = path.iter().copied().chain([key.as_str()]).collect();
                    let new_path: Vec<&str> = path.iter().copied().chain([new]).collect();
                    return Err(error(&old_path, &new_path, &example));
                }
            }
        }
    }
    Ok(())
}

/// `#[serde(with = "reporunner_server::config::whole_seconds")]`: a number of
/// seconds kept as an integer (`u32` or `u64`, e.g. because it travels in a
/// proto field of seconds), written in config as a humantime string (`"5m"`).
/// A duration that is not a whole number of seconds, or too long for the
/// integer, is refused.
pub mod whole_seconds {
    use serde::{Deserializer, Serializer};

    pub fn serialize<T, S>(seconds: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: Copy + Into<u64>,
        S: Serializer,
    {
        super::whole::serialize((*seconds).into(), super::whole::SECOND, serializer)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: TryFrom<u64>,
        D: Deserializer<'de>,
    {
        super::whole::deserialize(deserializer, super::whole::SECOND)
    }
}

/// `#[serde(with = "reporunner_server::config::whole_millis")]`: like
/// [`whole_seconds`], for a number of milliseconds.
pub mod whole_millis {
    use serde::{Deserializer, Serializer};

    pub fn serialize<T, S>(millis: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: Copy + Into<u64>,
        S: Serializer,
    {
        super::whole::serialize((*millis).into(), super::whole::MILLISECOND, serializer)
    }

    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: TryFrom<u64>,
        D: Deserializer<'de>,
    {
        super::whole::deserialize(deserializer, super::whole::MILLISECOND)
    }
}

mod whole {
    use std::time::Duration;

    use humantime_serde::re::humantime::format_duration;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// A unit and its name in messages.
    pub(super) type Unit = (Duration, &'static str);
    pub(super) const SECOND: Unit = (Duration::from_secs(1), "seconds");
    pub(super) const MILLISECOND: Unit = (Duration::from_millis(1), "milliseconds");

    pub(super) fn serialize<S: Serializer>(count: u64, unit: Unit, serializer: S) -> Result<S::Ok, S::Error> {
        let duration = Duration::from_nanos(
            u64::try_from(unit.0.as_nanos().saturating_mul(u128::from(count))).unwrap_or(u64::MAX),
        );
        humantime_serde::serialize(&duration, serializer)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D, unit: Unit) -> Result<T, D::Error>
    where
        T: TryFrom<u64>,
        D: Deserializer<'de>,
    {
        let duration = humantime_serde::Serde::<Duration>::deserialize(deserializer)?.into_inner();
        let nanos = duration.as_nanos();
        let per_unit = unit.0.as_nanos();
        if nanos % per_unit != 0 {
            return Err(D::Error::custom(format!(
                "{} is not a whole number of {}",
                format_duration(duration),
                unit.1
            )));
        }
        u64::try_from(nanos / per_unit)
            .ok()
            .and_then(|count| T::try_from(count).ok())
            .ok_or_else(|| D::Error::custom(format!("{} is too long", format_duration(duration))))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        listen: String,
        data_dir: String,
        nested: Nested,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Nested {
        timeout_ms: u64,
        name: String,
    }

    impl Default for Settings {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1:50051".into(),
                data_dir: "/default".into(),
                nested: Nested::default(),
            }
        }
    }

    impl Default for Nested {
        fn default() -> Self {
            Self {
                timeout_ms: 1000,
                name: "default".into(),
            }
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
    }

    #[test]
    fn each_layer_overrides_the_one_below() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rr.toml",
                "listen = \"0.0.0.0:1\"\ndata_dir = \"/from-file\"\n[nested]\nname = \"file\"\ntimeout_ms = 5",
            )?;
            jail.set_env("TESTRR_DATA_DIR", "/from-env");
            jail.set_env("TESTRR_NESTED__TIMEOUT_MS", "7");
            let flags = Flags {
                listen: Some("127.0.0.1:9".into()),
            };
            let settings: Settings = load_with_env(Some(Path::new("rr.toml")), &flags, "TESTRR_").unwrap();
            assert_eq!(settings.listen, "127.0.0.1:9", "flags beat everything");
            assert_eq!(settings.data_dir, "/from-env", "env beats the file");
            assert_eq!(settings.nested.timeout_ms, 7, "nested env keys split on __");
            assert_eq!(settings.nested.name, "file", "the file beats defaults");
            Ok(())
        });
    }

    #[test]
    fn command_line_variables_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REPORUNNER_SERVER", "http://127.0.0.1:1");
            jail.set_env("REPORUNNER_CREDENTIALS", "/tmp/c.json");
            jail.set_env("REPORUNNER_DATA_DIR", "/from-env");
            let settings: Settings = load(None, &Flags::default()).unwrap();
            assert_eq!(settings.data_dir, "/from-env");
            Ok(())
        });
    }

    #[test]
    fn absent_flags_and_env_keep_defaults() {
        figment::Jail::expect_with(|_jail| {
            let settings: Settings = load_with_env(None, &Flags::default(), "TESTRR_").unwrap();
            assert_eq!(settings, Settings::default());
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_and_a_bad_value_name_the_problem() {
        let err =
            load::<Settings, _>(Some(Path::new("/nonexistent/rr.toml")), &Flags::default()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rr.toml"), "{err}");
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESTRR_NESTED__TIMEOUT_MS", "soon");
            let err = load_with_env::<Settings, _>(None, &Flags::default(), "TESTRR_").unwrap_err();
            assert!(err.to_string().to_lowercase().contains("timeout_ms"), "{err}");
            Ok(())
        });
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Durations {
        runner: Runner,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Runner {
        #[serde(with = "humantime_serde")]
        stop_grace: Duration,
        #[serde(with = "humantime_serde")]
        poll: Duration,
        /// A key that keeps its unit: not a renamed duration.
        max_runtime_seconds: u32,
        #[serde(with = "super::whole_seconds")]
        start_timeout: u32,
    }

    impl Default for Runner {
        fn default() -> Self {
            Self {
                stop_grace: Duration::from_secs(5),
                poll: Duration::from_secs(1),
                max_runtime_seconds: 60,
                start_timeout: 300,
            }
        }
    }

    #[test]
    fn durations_are_humantime_strings_in_files_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rr.toml",
                "[runner]\nstop_grace = \"1m 30s\"\nstart_timeout = \"2h\"\nmax_runtime_seconds = 7",
            )?;
            jail.set_env("TESTRR_RUNNER__POLL", "250ms");
            let settings: Durations =
                load_with_env(Some(Path::new("rr.toml")), &Flags::default(), "TESTRR_").unwrap();
            assert_eq!(settings.runner.stop_grace, Duration::from_secs(90));
            assert_eq!(settings.runner.poll, Duration::from_millis(250));
            assert_eq!(settings.runner.start_timeout, 7_200, "whole seconds");
            assert_eq!(settings.runner.max_runtime_seconds, 7);
            // A bare number is not a duration.
            jail.set_env("TESTRR_RUNNER__POLL", "250");
            let err = load_with_env::<Durations, _>(None, &Flags::default(), "TESTRR_").unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("expected a duration") && message.to_lowercase().contains("runner.poll"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn an_old_unit_key_in_a_file_is_refused_naming_the_new_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("rr.toml", "[runner]\nstop_grace_ms = 5000\n")?;
            let err = load_with_env::<Durations, _>(Some(Path::new("rr.toml")), &Flags::default(), "TESTRR_")
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "config file rr.toml: runner.stop_grace_ms is no longer read; use runner.stop_grace = \"5s\""
            );
            jail.create_file("rr.toml", "[runner]\nstart_timeout_seconds = 600\n")?;
            let err = load_with_env::<Durations, _>(Some(Path::new("rr.toml")), &Flags::default(), "TESTRR_")
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "config file rr.toml: runner.start_timeout_seconds is no longer read; use runner.start_timeout = \"10m\""
            );
            Ok(())
        });
    }

    #[test]
    fn an_old_unit_key_in_the_environment_is_refused_naming_the_new_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TESTRR_RUNNER__POLL_SECS", "90");
            let err = load_with_env::<Durations, _>(None, &Flags::default(), "TESTRR_").unwrap_err();
            assert_eq!(
                err.to_string(),
                "environment: TESTRR_RUNNER__POLL_SECS is no longer read; use TESTRR_RUNNER__POLL=\"1m 30s\""
            );
            jail.clear_env();
            jail.set_env("TESTRR_RUNNER__STOP_GRACE_MS", "5000");
            let err = load_with_env::<Durations, _>(None, &Flags::default(), "TESTRR_").unwrap_err();
            assert_eq!(
                err.to_string(),
                "environment: TESTRR_RUNNER__STOP_GRACE_MS is no longer read; use TESTRR_RUNNER__STOP_GRACE=5s"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_unit_keys_without_a_duration_counterpart_stay_unknown_fields() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("rr.toml", "[runner]\nlinger_ms = 5\n")?;
            let err = load_with_env::<Durations, _>(Some(Path::new("rr.toml")), &Flags::default(), "TESTRR_")
                .unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains("linger_ms") && !message.contains("no longer read"),
                "{message}"
            );
            Ok(())
        });
    }

    #[test]
    fn whole_seconds_refuse_fractions_and_whole_millis_keep_milliseconds() {
        #[derive(Debug, Deserialize)]
        struct Whole {
            #[serde(with = "super::whole_seconds")]
            secs: u32,
            #[serde(with = "super::whole_millis")]
            millis: u32,
        }
        let whole: Whole = serde_json::from_str(r#"{"secs": "3m", "millis": "1s 500ms"}"#).unwrap();
        assert_eq!((whole.secs, whole.millis), (180, 1_500));
        let err = serde_json::from_str::<Whole>(r#"{"secs": "1500ms", "millis": "1s"}"#).unwrap_err();
        assert!(err.to_string().contains("not a whole number of seconds"), "{err}");
        let err = serde_json::from_str::<Whole>(r#"{"secs": "1s", "millis": "10us"}"#).unwrap_err();
        assert!(
            err.to_string().contains("not a whole number of milliseconds"),
            "{err}"
        );
    }
}
