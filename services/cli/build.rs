//! Embeds the web dashboard's built files (`dashboard/dist`, made by
//! `make dashboard`: npm from the registry, no CDN) so that `reporunner serve`
//! needs no Node at run time. Without a build the binary carries none and
//! says so when it serves.

use std::{
    env,
    fmt::Write as _,
    path::{Path, PathBuf},
};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let dist = manifest_dir.join("../../dashboard/dist");
    let mut files = Vec::new();
    if dist.join("index.html").is_file() {
        // A directory is scanned whole: any file of the build changing reruns this.
        println!("cargo:rerun-if-changed={}", dist.display());
        let dist = dist.canonicalize()?;
        walk(&dist, &mut files)?;
        files.sort();
        let mut code = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
        for file in &files {
            let name = file.strip_prefix(&dist)?.to_string_lossy().replace('\\', "/");
            writeln!(
                code,
                "    ({name:?}, include_bytes!({:?})),",
                file.display().to_string()
            )?;
        }
        code.push_str("];\n");
        std::fs::write(PathBuf::from(env::var("OUT_DIR")?).join("dashboard.rs"), code)?;
    } else {
        // A path that does not exist would rerun this on every build: watch
        // the dashboard's directory for the build to appear instead.
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join("../../dashboard").display()
        );
        std::fs::write(
            PathBuf::from(env::var("OUT_DIR")?).join("dashboard.rs"),
            "pub static FILES: &[(&str, &[u8])] = &[];\n",
        )?;
    }
    Ok(())
}
