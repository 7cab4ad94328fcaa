//! Static sites: an index.html with nothing to build.

use reporunner_proto::common::v1::ComponentKind;

use super::{util::default_name, weight};
use crate::{
    draft::{Draft, cmd, ev},
    index::{RepoIndex, join},
};

pub fn detect(idx: &RepoIndex, dir: &str) -> Option<Draft> {
    let dirs = [
        dir.to_owned(),
        join(dir, "public"),
        join(dir, "site"),
        join(dir, "www"),
        join(dir, "docs"),
    ];
    let (site_dir, file) = dirs
        .iter()
        .map(|d| (d.clone(), join(d, "index.html")))
        .find(|(_, f)| idx.has(f))?;
    let mut d = Draft::new(&default_name(idx, dir), dir, "html");
    d.set_kind(ComponentKind::Static);
    d.c.runtime = Some(reporunner_proto::common::v1::Runtime {
        name: "static".into(),
        version_constraint: String::new(),
        preferred_version: String::new(),
    });
    let sub = super::util::rel_to(dir, &site_dir);
    let serve_dir = if sub.is_empty() {
        String::new()
    } else {
        format!(" --directory {sub}")
    };
    d.set_start(
        ev("start", &file, 0, "index.html with no build", weight::FRAMEWORK),
        cmd(format!(
            "python3 -m http.server ${{PORT:-8000}} --bind 0.0.0.0{serve_dir}"
        )),
        8000,
        "env:PORT",
    );
    d.c.health_paths = vec!["/".into(), "/index.html".into()];
    Some(d)
}
