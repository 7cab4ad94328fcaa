//! The sandbox against a hostile step, on this host. These need bubblewrap
//! and root (to change uid); under `CI=true` a missing one fails instead of
//! skipping.

use std::{collections::BTreeMap, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use reporunner_sandbox::{Limits, Sandbox, SandboxConfig, SandboxMode, Step, base_env, limit_hit};

fn usable() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let bwrap = reporunner_host::which("bwrap", &std::env::var_os("PATH").unwrap_or_default()).is_some();
    if root && bwrap {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "the sandbox tests need root and bubblewrap (root: {root}, bwrap: {bwrap})"
    );
    eprintln!("skipped: needs root and bubblewrap");
    false
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(sandbox: &Sandbox, step: &Step) -> Run {
    let prepared = sandbox.prepare(step).await.expect("prepared");
    assert!(prepared.sandboxed, "not sandboxed: {}", prepared.note);
    let output = tokio::time::timeout(Duration::from_secs(60), prepared.command().output())
        .await
        .expect("finished in time")
        .expect("ran");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

struct Host {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    workspace: std::path::PathBuf,
    home: std::path::PathBuf,
    sandbox: Sandbox,
}

fn host() -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let workspace = data.join("workspaces/owner-a/ws1");
    let home = data.join("tmp/run1/home");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::write(data.join("jwt.key"), "signing-key-secret").expect("key");
    std::fs::set_permissions(data.join("jwt.key"), std::fs::Permissions::from_mode(0o600)).expect("mode");
    let mut config = SandboxConfig {
        mode: SandboxMode::Required,
        ..SandboxConfig::default()
    };
    config.hidden_paths.push(data.clone());
    Host {
        _dir: dir,
        data,
        workspace,
        home,
        sandbox: Sandbox::new(config),
    }
}

fn step(host: &Host, script: &str) -> Step {
    let mut env = base_env(reporunner_sandbox::BASE_ENV.iter().copied());
    env.insert("APP_SETTING".into(), "from-the-plan".into());
    Step {
        name: format!("t-{}", std::process::id()),
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: host.workspace.clone(),
        env,
        writable: vec![host.workspace.clone()],
        home: Some(host.home.clone()),
        owner: Some("owner-a".into()),
        ..Step::default()
    }
}

#[tokio::test]
async fn a_step_runs_as_an_unprivileged_uid_and_root_only_files_stay_unreadable() {
    if !usable() {
        return;
    }
    let host = host();
    // A root-owned 0600 file where the step can see it: inside its own workspace.
    let planted = host.workspace.join("planted-secret");
    std::fs::write(&planted, "root-only").expect("planted");
    let step = step(
        &host,
        "id -u; id -g; cat /etc/shadow; cat planted-secret; ls /root; echo done",
    );
    // Hand the workspace over first, then plant the root file, as a later
    // root write (a patch, a tool) would leave it.
    let prepared = host.sandbox.prepare(&step).await.expect("prepared");
    std::fs::write(&planted, "root-only").expect("planted");
    nix::unistd::chown(
        &planted,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .expect("chown");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let output = prepared.command().output().await.expect("ran");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let identity = prepared.identity.expect("an identity as root");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(identity.uid.to_string().as_str()),
        "{stdout} {stderr}"
    );
    assert_eq!(lines.next(), Some(identity.gid.to_string().as_str()));
    assert_ne!(identity.uid, 0);
    assert!(!stdout.contains("root-only"), "{stdout}");
    assert!(!stdout.contains("root:"), "shadow leaked: {stdout}");
    assert!(stderr.contains("planted-secret: Permission denied"), "{stderr}");
    assert!(stdout.ends_with("done\n"));
}

#[tokio::test]
async fn a_step_sees_neither_the_data_dir_nor_the_servers_environment_and_cannot_write_outside() {
    if !usable() {
        return;
    }
    // SAFETY-free: setting a variable of this test process before the step.
    let host = host();
    let script = format!(
        "cat {key}; ls {data}; env; echo x > /etc/pwned; echo x > {data}/pwned; echo x > /tmp/ok && echo tmp-ok; \
         echo x > ./ok && echo ws-ok; echo $HOME; touch $HOME/dotfile && echo home-ok",
        key = host.data.join("jwt.key").display(),
        data = host.data.display()
    );
    let mut step = step(&host, &script);
    step.env
        .insert("REPORUNNER_ADMIN__PASSWORD".into(), "never-seen".into());
    // The caller composes the env from base_env, which never passes REPORUNNER_*.
    step.env.retain(|k, _| !k.starts_with("REPORUNNER_"));
    let out = run(&host.sandbox, &step).await;
    assert!(!out.stdout.contains("signing-key-secret"), "{}", out.stdout);
    assert!(!out.stdout.contains("never-seen"));
    assert!(out.stdout.contains("APP_SETTING=from-the-plan"));
    assert!(
        out.stdout.contains("tmp-ok") && out.stdout.contains("ws-ok") && out.stdout.contains("home-ok"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr.contains("/etc/pwned: Read-only file system"),
        "{}",
        out.stderr
    );
    assert!(!Path::new("/etc/pwned").exists());
    assert!(!host.data.join("pwned").exists());
    assert!(host.workspace.join("ok").exists());
    assert_eq!(out.code, 0);
}

#[test]
fn base_env_never_passes_reporunner_settings() {
    let env: BTreeMap<String, String> = base_env(["PATH", "REPORUNNER_ADMIN__PASSWORD", "HOME"]);
    assert!(env.contains_key("PATH"));
    assert!(!env.keys().any(|k| k.starts_with("REPORUNNER_")));
}

#[tokio::test]
async fn a_fork_bomb_and_a_huge_allocation_are_stopped_by_the_limits() {
    if !usable() {
        return;
    }
    let host = host();
    let limits = Limits {
        memory_bytes: 512 << 20,
        max_processes: 32,
        ..Limits::default()
    };
    // A bounded fork bomb: 200 sleeping children, far over the limit.
    let mut bomb = step(
        &host,
        "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; wait; echo all-forked",
    );
    bomb.limits = limits;
    let out = run(&host.sandbox, &bomb).await;
    let tail: Vec<String> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .map(String::from)
        .collect();
    let hit = limit_hit(out.code, &tail, &limits)
        .unwrap_or_else(|| panic!("the process limit was not named: {} {}", out.code, out.stderr));
    assert_eq!(hit.limit, "processes", "{}", out.stderr);

    let mut alloc = step(&host, "python3 -c 'b = bytearray(4 << 30); print(len(b))'");
    alloc.limits = limits;
    // Another owner: the bomb's killed children may still count against its uid.
    alloc.owner = Some("owner-b".into());
    let out = run(&host.sandbox, &alloc).await;
    assert_ne!(out.code, 0);
    assert!(!out.stdout.contains("4294967296"));
    let tail: Vec<String> = out.stderr.lines().map(String::from).collect();
    let hit = limit_hit(out.code, &tail, &limits)
        .unwrap_or_else(|| panic!("the memory limit was not named: {} {}", out.code, out.stderr));
    assert_eq!(hit.limit, "memory", "{}", out.stderr);
}

#[tokio::test]
async fn toolchains_under_the_servers_home_work_with_the_steps_own_home() {
    if !usable() {
        return;
    }
    let Some(home) = std::env::var_os("HOME").map(std::path::PathBuf::from) else {
        return;
    };
    if !home.join(".rustup").is_dir() {
        eprintln!("skipped: no rustup under the server's home");
        return;
    }
    let host = host();
    // What a server started from a plain shell has: no RUSTUP_HOME or
    // RUSTUP_TOOLCHAIN (rustup's proxies set them only for their children).
    let mut step = step(&host, "cargo --version && echo cargo-ok");
    step.env.retain(|k, _| !k.starts_with("RUSTUP_"));
    let out = run(&host.sandbox, &step).await;
    assert!(out.stdout.contains("cargo-ok"), "{}\n{}", out.stdout, out.stderr);
}

/// A run's scratch dir lies deep under the data dir, and what tools make
/// under TMPDIR (pytest's `tmp_path` of a long test name) is deeper still:
/// an AF_UNIX socket there would pass the 108-byte limit of its path. The
/// step sees the scratch dir at a short TMPDIR; what it writes there lands
/// in the run's scratch dir.
#[tokio::test]
async fn a_unix_socket_binds_under_tmpdir_however_deep_the_data_dir() {
    if !usable() {
        return;
    }
    let host = host();
    let scratch = host
        .data
        .join("runner/tmp/b8cc6cb3-cebb-4e3a-a09f-519da172f00a-a-long-run-directory-name");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let deep = "pytest-of-nobody/pytest-0/test_the_server_listens_on_a_unix_socket_0";
    let script = format!(
        "mkdir -p \"$TMPDIR/{deep}\" && python3 -c 'import os, socket; \
         s = socket.socket(socket.AF_UNIX); s.bind(os.environ[\"TMPDIR\"] + \"/{deep}/s.sock\"); print(\"bound\")' \
         && echo kept > \"$TMPDIR/kept\" && echo \"$TMPDIR\""
    );
    let mut step = step(&host, &script);
    step.env.insert("TMPDIR".into(), scratch.display().to_string());
    step.writable.push(scratch.clone());
    assert!(
        format!("{}/{deep}/s.sock", scratch.display()).len() > 108,
        "the host path must be too long for a socket"
    );
    let out = run(&host.sandbox, &step).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("bound"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().last(), Some(reporunner_sandbox::SHORT_TMPDIR));
    assert_eq!(
        std::fs::read_to_string(scratch.join("kept")).expect("written through"),
        "kept\n"
    );
}

/// POSIX shared memory lives in /dev/shm: Python's multiprocessing (a
/// server with worker processes, a `Value`), browsers and test runners
/// need it writable, and `--dev` alone leaves it root's.
#[tokio::test]
async fn a_step_can_use_posix_shared_memory() {
    if !usable() {
        return;
    }
    let host = host();
    let step = step(
        &host,
        "python3 -c 'import multiprocessing; v = multiprocessing.Value(\"i\", 7); print(\"shared\", v.value)' \
         && touch /dev/shm/x && ls -ld /dev/shm",
    );
    let out = run(&host.sandbox, &step).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("shared 7"), "{}", out.stdout);
    assert!(out.stdout.contains("drwxrwxrwt"), "{}", out.stdout);
}
