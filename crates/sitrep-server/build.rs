//! The git revision the aggregator is built from, for `sitrep_build_info{revision}`: `unknown` outside a git
//! checkout or without git (a source tarball, a container build without `.git`).

fn main() {
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SITREP_REVISION={revision}");
    // Built again when HEAD moves: a checkout changes HEAD, a commit the branch's ref (kept in the common git
    // directory when this is a worktree). Without a checkout nothing is watched but this file.
    println!("cargo:rerun-if-changed=build.rs");
    let git = |arg: &str| {
        std::process::Command::new("git")
            .args(["rev-parse", arg])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if let (Some(dir), Some(common)) = (git("--git-dir"), git("--git-common-dir")) {
        // Only paths that exist: cargo runs a script again every build while a watched path is missing.
        for path in [format!("{dir}/HEAD"), format!("{common}/refs/heads"), format!("{common}/packed-refs")] {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
