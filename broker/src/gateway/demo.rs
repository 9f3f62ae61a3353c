//! The demo repository of `jit-broker dev`: a bare `demo/hello.git` with one commit on
//! `main`, made with the `git` program, so the quick start can clone and push through the
//! gateway at once.

use std::path::Path;
use std::process::Command;

/// The demo repository's path.
pub const DEMO_REPO: &str = "demo/hello";

/// Why the demo repository could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `git` could not be run.
    #[error("cannot run git: {0}")]
    Spawn(#[from] std::io::Error),
    /// A git command failed.
    #[error("`git {args}` failed: {stderr}")]
    Git {
        /// The arguments.
        args: String,
        /// Its error output.
        stderr: String,
    },
}

fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<String, DemoError> {
    use std::io::Write as _;
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "git-jit")
        .env("GIT_AUTHOR_EMAIL", "demo@git-jit.invalid")
        .env("GIT_COMMITTER_NAME", "git-jit")
        .env("GIT_COMMITTER_EMAIL", "demo@git-jit.invalid")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(DemoError::Git {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Creates `{root}/demo/hello.git` (bare, one commit with a README on `main`) unless it
/// exists. Returns the repository path.
pub fn create(root: &Path) -> Result<&'static str, DemoError> {
    let repo = root.join(format!("{DEMO_REPO}.git"));
    if repo.join("HEAD").exists() {
        return Ok(DEMO_REPO);
    }
    std::fs::create_dir_all(&repo)?;
    git(
        &repo,
        &["init", "--bare", "--quiet", "--initial-branch=main"],
        None,
    )?;
    let readme = b"# hello\n\nServed by the git-jit gateway (jit-broker dev).\n";
    let blob = git(&repo, &["hash-object", "-w", "--stdin"], Some(readme))?;
    let tree = git(
        &repo,
        &["mktree"],
        Some(format!("100644 blob {blob}\tREADME.md\n").as_bytes()),
    )?;
    let commit = git(&repo, &["commit-tree", &tree, "-m", "Initial commit"], None)?;
    git(&repo, &["update-ref", "refs/heads/main", &commit], None)?;
    Ok(DEMO_REPO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_bare_repository_with_one_commit_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(create(dir.path()).expect("created"), DEMO_REPO);
        let repo = dir.path().join("demo/hello.git");
        let log = git(&repo, &["log", "--format=%s", "main"], None).expect("log");
        assert_eq!(log, "Initial commit");
        assert_eq!(create(dir.path()).expect("idempotent"), DEMO_REPO);
    }
}
