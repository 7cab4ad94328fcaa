//! Pure helpers: the start command line with its port and host, the
//! environment, and safe names. No I/O here.

use std::{collections::BTreeMap, sync::LazyLock};

use regex::Regex;

use reporunner_sandbox::process;

use crate::error::{Result, RunnerError};

/// How the allocated port reaches the program (`Component.port_binding`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortBinding {
    /// Only through the environment (`PORT`, always set anyway).
    Env(String),
    /// A command-line flag followed by the port, e.g. `--port`, `-p`.
    Flag(String),
    /// Django's `runserver [HOST:]PORT`.
    DjangoRunserver,
    /// Nothing given: the program reads `PORT` or listens where the plan says.
    None,
}

impl PortBinding {
    /// Parses the plan's `port_binding`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::None);
        }
        if text == "django-runserver" {
            return Ok(Self::DjangoRunserver);
        }
        let valid_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let valid_flag = |s: &str| {
            s.starts_with('-')
                && s.len() > 1
                && s.chars()
                    // Dotted flags are common: `streamlit run --server.port`.
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if let Some(name) = text.strip_prefix("env:")
            && valid_name(name)
        {
            return Ok(Self::Env(name.to_owned()));
        }
        if let Some(flag) = text.strip_prefix("flag:")
            && valid_flag(flag)
        {
            return Ok(Self::Flag(flag.to_owned()));
        }
        Err(RunnerError::invalid(format!(
            "port_binding {text:?} is not one of env:NAME, flag:--FLAG, django-runserver"
        )))
    }
}

/// Whether `c` may end a shell word in the simple commands we rewrite.
fn word_end(rest: &str) -> bool {
    rest.is_empty()
        || rest.starts_with(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|' || c == ')')
}

/// Replaces the value of `flag` (as `flag VALUE` or `flag=VALUE`) with
/// `value`, or appends `flag value` when the command has no such flag.
pub fn set_flag(command: &str, flag: &str, value: &str) -> String {
    let pattern = format!(r"(^|\s){}(=|\s+)[^\s;&|)]+", regex::escape(flag));
    // The flag is escaped, so the pattern always compiles.
    if let Ok(re) = Regex::new(&pattern)
        && re.is_match(command)
    {
        return re
            .replace_all(command, |caps: &regex::Captures<'_>| {
                format!("{}{flag}{}{value}", &caps[1], &caps[2])
            })
            .into_owned();
    }
    format!("{} {flag} {value}", command.trim_end())
}

/// Points `manage.py runserver` at `addr` (`HOST:PORT`): replaces an
/// address argument after `runserver`, or inserts one.
pub fn set_runserver_addr(command: &str, addr: &str) -> String {
    static RUNSERVER: LazyLock<Option<Regex>> = LazyLock::new(|| {
        // `runserver`, its options, then maybe an address (digits, or
        // something with a colon, or an IP).
        Regex::new(r"(^|\s)runserver((?:\s+-[^\s;&|)]+)*)(\s+(?:\[[0-9a-fA-F:.]*\]:\d+|[^\s;&|)\-][^\s;&|)]*:\d+|\d+|\d+\.\d+\.\d+\.\d+))?")
            .ok()
    });
    let Some(re) = RUNSERVER.as_ref() else {
        return command.to_owned();
    };
    let Some(caps) = re.captures(command) else {
        return command.to_owned();
    };
    let Some(whole) = caps.get(0) else {
        return command.to_owned();
    };
    if !word_end(&command[whole.end()..]) {
        return command.to_owned();
    }
    let options = caps.get(2).map_or("", |m| m.as_str());
    format!(
        "{}{}runserver{options} {addr}{}",
        &command[..whole.start()],
        &caps[1],
        &command[whole.end()..]
    )
}

/// Rewrites `--host 0.0.0.0` / `--hostname=0.0.0.0` (and `::`) to `host`.
pub fn force_host(command: &str, host: &str) -> String {
    static ANY_HOST: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(
            r"(^|\s)(--host|--hostname)(=|\s+)(?:0\.0\.0\.0|::|'0\.0\.0\.0'|\x220\.0\.0\.0\x22)(\s|$|[;&|)])",
        )
        .ok()
    });
    match ANY_HOST.as_ref() {
        Some(re) => re
            .replace_all(command, |caps: &regex::Captures<'_>| {
                format!("{}{}{}{host}{}", &caps[1], &caps[2], &caps[3], &caps[4])
            })
            .into_owned(),
        None => command.to_owned(),
    }
}

/// The start command with the port and host placed the way the framework
/// expects. `$PORT` and `${PORT}` in the command need no rewriting: `sh`
/// expands them from the environment.
pub fn start_command(
    run: &str,
    binding: &PortBinding,
    port: Option<u16>,
    host: &str,
    force_bind_host: bool,
) -> String {
    let mut command = run.trim().to_owned();
    if force_bind_host && host != "0.0.0.0" {
        command = force_host(&command, host);
    }
    let Some(port) = port else {
        return command;
    };
    match binding {
        PortBinding::Flag(flag) => set_flag(&command, flag, &port.to_string()),
        PortBinding::DjangoRunserver => set_runserver_addr(&command, &format!("{}:{port}", url_host(host))),
        PortBinding::Env(_) | PortBinding::None => command,
    }
}

/// `host` as it appears before `:port` in an address or URL.
pub fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Checks that a run id or component name can be one path segment (see
/// [`reporunner_sandbox::process::check_segment`]).
pub fn check_segment(what: &str, value: &str) -> Result<()> {
    process::check_segment(what, value).map_err(RunnerError::invalid)
}

/// Checks that an environment variable name is usable.
pub fn check_env_name(name: &str) -> Result<()> {
    process::check_env_name(name).map_err(RunnerError::invalid)
}

/// The environment of a process, lowest precedence first: the service's
/// passed-on variables, the plan's defaults, the request, then what the
/// runner sets itself (`PORT`, the binding's variable, `HOST`, `TMPDIR`);
/// see [`reporunner_sandbox::process::environment`].
pub fn environment(
    passed: impl IntoIterator<Item = (String, String)>,
    plan_defaults: impl IntoIterator<Item = (String, String)>,
    request: &BTreeMap<String, String>,
    runner: impl IntoIterator<Item = (String, String)>,
) -> Result<BTreeMap<String, String>> {
    process::environment(passed, plan_defaults, request, runner).map_err(RunnerError::invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_parse() {
        assert_eq!(
            PortBinding::parse("env:PORT").unwrap(),
            PortBinding::Env("PORT".into())
        );
        assert_eq!(
            PortBinding::parse("flag:--port").unwrap(),
            PortBinding::Flag("--port".into())
        );
        assert_eq!(
            PortBinding::parse("flag:-p").unwrap(),
            PortBinding::Flag("-p".into())
        );
        assert_eq!(
            PortBinding::parse("django-runserver").unwrap(),
            PortBinding::DjangoRunserver
        );
        assert_eq!(
            PortBinding::parse("flag:--server.port").unwrap(),
            PortBinding::Flag("--server.port".into())
        );
        assert_eq!(
            set_flag(
                "streamlit run app.py --server.port 8501",
                "--server.port",
                "40001"
            ),
            "streamlit run app.py --server.port 40001"
        );
        assert_eq!(PortBinding::parse("").unwrap(), PortBinding::None);
        assert!(PortBinding::parse("flag:; rm -rf /").is_err());
        assert!(PortBinding::parse("env:A B").is_err());
    }

    #[test]
    fn flags_are_appended_or_replaced() {
        assert_eq!(
            set_flag("uvicorn app:app", "--port", "4001"),
            "uvicorn app:app --port 4001"
        );
        assert_eq!(
            set_flag("uvicorn app:app --port 8000 --reload", "--port", "4001"),
            "uvicorn app:app --port 4001 --reload"
        );
        assert_eq!(set_flag("vite --port=5173", "--port", "4001"), "vite --port=4001");
        assert_eq!(set_flag("serve -p 3000 dist", "-p", "4001"), "serve -p 4001 dist");
        // `-p` inside another word is left alone.
        assert_eq!(set_flag("node x-p 3", "-p", "4001"), "node x-p 3 -p 4001");
    }

    #[test]
    fn runserver_gets_the_address() {
        assert_eq!(
            set_runserver_addr("python manage.py runserver", "127.0.0.1:4001"),
            "python manage.py runserver 127.0.0.1:4001"
        );
        assert_eq!(
            set_runserver_addr("python manage.py runserver 0.0.0.0:8000", "127.0.0.1:4001"),
            "python manage.py runserver 127.0.0.1:4001"
        );
        assert_eq!(
            set_runserver_addr(
                "python manage.py runserver --noreload 8000 && echo",
                "127.0.0.1:4001"
            ),
            "python manage.py runserver --noreload 127.0.0.1:4001 && echo"
        );
        assert_eq!(
            set_runserver_addr("python manage.py runserver --noreload", "127.0.0.1:4001"),
            "python manage.py runserver --noreload 127.0.0.1:4001"
        );
        assert_eq!(set_runserver_addr("gunicorn app", "h:1"), "gunicorn app");
    }

    #[test]
    fn any_host_is_rewritten_to_the_bind_host() {
        assert_eq!(
            start_command(
                "flask run --host 0.0.0.0",
                &PortBinding::Flag("--port".into()),
                Some(4001),
                "127.0.0.1",
                true
            ),
            "flask run --host 127.0.0.1 --port 4001"
        );
        assert_eq!(
            start_command(
                "next dev --hostname=0.0.0.0",
                &PortBinding::None,
                Some(4001),
                "127.0.0.1",
                true
            ),
            "next dev --hostname=127.0.0.1"
        );
        assert_eq!(
            start_command(
                "flask run --host 0.0.0.0",
                &PortBinding::None,
                None,
                "127.0.0.1",
                false
            ),
            "flask run --host 0.0.0.0"
        );
        assert_eq!(
            start_command(
                "python manage.py runserver",
                &PortBinding::DjangoRunserver,
                Some(5),
                "::1",
                true
            ),
            "python manage.py runserver [::1]:5"
        );
    }

    #[test]
    fn names_must_be_path_segments() {
        check_segment("run_id", "run-1.a_b").unwrap();
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_segment("run_id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_runner_has_the_last_word_on_port() {
        let request = BTreeMap::from([
            ("PORT".to_owned(), "1".to_owned()),
            ("A".to_owned(), "req".to_owned()),
        ]);
        let env = environment(
            [("PATH".to_owned(), "/bin".to_owned())],
            [
                ("A".to_owned(), "plan".to_owned()),
                ("B".to_owned(), "plan".to_owned()),
            ],
            &request,
            [("PORT".to_owned(), "4001".to_owned())],
        )
        .unwrap();
        assert_eq!(env["PORT"], "4001");
        assert_eq!(env["A"], "req");
        assert_eq!(env["B"], "plan");
        assert_eq!(env["PATH"], "/bin");
        let bad = BTreeMap::from([("A=B".to_owned(), "x".to_owned())]);
        assert!(environment([], [], &bad, []).is_err());
    }
}
