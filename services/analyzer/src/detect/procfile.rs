//! Procfile: `web:` is the author's own start command and overrides
//! framework defaults; `release:` becomes a setup command.

use reporunner_proto::common::v1::{Command, ComponentKind};

use super::{
    util::{command_port, language_of, runtime_of},
    weight,
};
use crate::{
    draft::{Draft, ev},
    index::{RepoIndex, parent_of},
};

pub fn apply(idx: &RepoIndex, drafts: &mut Vec<Draft>) {
    let files: Vec<String> = idx
        .files()
        .filter(|f| crate::index::file_name(f) == "Procfile" && f.split('/').count() <= 4)
        .cloned()
        .collect();
    for file in files {
        let Some(text) = idx.read(&file) else { continue };
        let dir = parent_of(&file).to_owned();
        for (i, line) in text.lines().enumerate().take(200) {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((name, command)) = line.split_once(':') else {
                continue;
            };
            let (name, command) = (name.trim(), command.trim());
            if command.is_empty() || name.contains(' ') {
                continue;
            }
            let target = target_for(drafts, &dir, command);
            let Some(d) = target else { continue };
            let e = ev(
                if name == "release" { "setup" } else { "start" },
                &file,
                i as u32 + 1,
                line,
                weight::PROCFILE,
            );
            match name {
                "web" => {
                    let (port, binding) = command_port(command, d.c.port);
                    let run = command.to_owned();
                    if d.set_start(
                        e,
                        Some(Command {
                            run,
                            working_dir: String::new(),
                            watch_mode: false,
                        }),
                        port,
                        binding,
                    ) {
                        d.c.port = port;
                        d.c.port_binding = binding.to_owned();
                        d.set_kind(ComponentKind::Web);
                    }
                }
                "release" => {
                    d.offer(e);
                    // The same migration spelled differently replaces the framework's.
                    d.c.setup.retain(|c| {
                        c.run != command
                            && !(c.run.contains("manage.py migrate") && command.contains("manage.py migrate"))
                    });
                    d.c.setup.push(Command {
                        run: command.to_owned(),
                        working_dir: String::new(),
                        watch_mode: false,
                    });
                }
                _ => d.note(ev("worker", &file, i as u32 + 1, line, weight::PROCFILE)),
            }
        }
    }
}

/// The component a file in `dir` speaks for: the one at `dir`, else the one
/// at the root, else the only one; a new one when there is none.
pub fn target_for<'a>(drafts: &'a mut Vec<Draft>, dir: &str, command: &str) -> Option<&'a mut Draft> {
    if let Some(pos) = drafts.iter().position(|d| d.dir() == dir) {
        return drafts.get_mut(pos);
    }
    if dir.is_empty() && drafts.len() == 1 {
        return drafts.get_mut(0);
    }
    // A Procfile elsewhere (a fixture, an example) speaks for no component.
    if !drafts.is_empty() || !dir.is_empty() {
        return None;
    }
    let language = language_of(command);
    let name = if dir.is_empty() {
        "app"
    } else {
        crate::index::file_name(dir)
    };
    let mut d = Draft::new(name, dir, language);
    d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
        name: runtime_of(language).into(),
        version_constraint: String::new(),
        preferred_version: String::new(),
    });
    drafts.push(d);
    drafts.last_mut()
}
