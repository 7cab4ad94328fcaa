//! Layered configuration: defaults < TOML file < `REPORUNNER_*` env < flags.
//!
//! Environment keys map to fields by lower-casing and splitting on `__`, so
//! `REPORUNNER_DATA_DIR` sets `data_dir` and `REPORUNNER_CLIENT__CONNECT_TIMEOUT_MS`
//! sets `client.connect_timeout_ms`.

use std::path::Path;

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Serialize, de::DeserializeOwned};

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
}

/// Loads `T` from its defaults, then `file` (when given), then the
/// environment, then `flags` (fields of `flags` that serialize to nothing,
/// e.g. `None` with `skip_serializing_if`, leave lower layers alone).
pub fn load<T, F>(file: Option<&Path>, flags: &F) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    load_with_env(
        file,
        flags,
        Env::prefixed(ENV_PREFIX).ignore(CLI_ENV_KEYS).split("__"),
    )
}

fn load_with_env<T, F>(file: Option<&Path>, flags: &F, env: Env) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    F: Serialize,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile {
                path: path.display().to_string(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    figment
        .merge(env)
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|err| ConfigError::Invalid(Box::new(err)))
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
            let settings: Settings = load_with_env(
                Some(Path::new("rr.toml")),
                &flags,
                Env::prefixed("TESTRR_").split("__"),
            )
            .unwrap();
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
            let settings: Settings =
                load_with_env(None, &Flags::default(), Env::prefixed("TESTRR_").split("__")).unwrap();
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
            let err =
                load_with_env::<Settings, _>(None, &Flags::default(), Env::prefixed("TESTRR_").split("__"))
                    .unwrap_err();
            assert!(err.to_string().to_lowercase().contains("timeout_ms"), "{err}");
            Ok(())
        });
    }
}
