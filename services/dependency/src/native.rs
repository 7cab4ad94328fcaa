//! C and C++: no package manager, the project's own build tool. The plan's
//! build command runs, else by what the directory holds: CMake
//! (`cmake -S . -B build && cmake --build build`), autotools (`./configure
//! && make`), or a Makefile (`make`). The tool must be on the host; none is
//! downloaded. Libraries the build needs come from the host (a missing
//! header fails the build, naming it).

use std::path::Path;

use crate::{
    Failure, Job, Report, Step,
    exec::{self, LogSink},
};

const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The build a directory asks for when the plan names none; with the tool
/// it needs.
pub fn default_build(dir: &Path) -> Option<(&'static str, &'static str)> {
    if dir.join("CMakeLists.txt").is_file() {
        Some(("cmake", "cmake -S . -B build && cmake --build build -j 2"))
    } else if dir.join("configure").is_file() {
        Some(("make", "./configure && make -j 2"))
    } else if ["Makefile", "makefile", "GNUmakefile"]
        .iter()
        .any(|m| dir.join(m).is_file())
    {
        Some(("make", "make -j 2"))
    } else {
        None
    }
}

/// Builds the component with its own build tool.
pub(crate) async fn install(job: &Job, sink: &mut LogSink, report: &mut Report) -> Step {
    let planned = job
        .component
        .build
        .as_ref()
        .map(|b| b.run.trim())
        .filter(|r| !r.is_empty());
    let default = default_build(&job.dir);
    let tool = match (planned, default) {
        (Some(line), _) if line.starts_with("cmake") => "cmake",
        (Some(_), _) => "make",
        (None, Some((tool, _))) => tool,
        (None, None) => {
            sink.system(
                "install",
                "no build file (CMakeLists.txt, configure, Makefile): nothing to build",
            )
            .await;
            report.tool = "none".into();
            report.environment_path.clone_from(&job.dir);
            return Ok(());
        }
    };
    let path = exec::which(tool, &job.base_path).ok_or_else(|| {
        Failure::new(format!(
            "`{tool}` is not installed on this host; C and C++ projects are built with their own tool, which is never downloaded"
        ))
    })?;
    report.tool = exec::capture(&path, &["--version"], Path::new("/"), PROBE_TIMEOUT)
        .await
        .and_then(|v| v.lines().next().map(str::to_owned))
        .unwrap_or_else(|| tool.to_owned());
    report.environment_path.clone_from(&job.dir);
    report.env.insert("PATH".into(), job.base_path.clone());
    job.custom_install(sink, report).await?;
    job.build(sink, report, default.map(|(_, line)| line)).await
}

#[cfg(test)]
mod tests {
    use super::default_build;

    #[test]
    fn the_build_follows_the_build_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(default_build(dir.path()), None);
        std::fs::write(dir.path().join("Makefile"), "all:\n").unwrap();
        assert_eq!(default_build(dir.path()).unwrap().1, "make -j 2");
        std::fs::write(dir.path().join("configure"), "#!/bin/sh\n").unwrap();
        assert_eq!(default_build(dir.path()).unwrap().1, "./configure && make -j 2");
        std::fs::write(dir.path().join("CMakeLists.txt"), "project(x C)\n").unwrap();
        assert_eq!(default_build(dir.path()).unwrap().0, "cmake");
    }
}
