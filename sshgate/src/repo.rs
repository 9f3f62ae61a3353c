//! The repository on disk, and which of a push's ref names are symbolic refs in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jit_proto::RepoPath;

/// The bare repository of `repo` under `root` (`<root>/acme/api.git`, else `<root>/acme/api`),
/// if it exists. `repo` is normalised (no `..`, no leading `/`), so the path stays in `root`.
pub fn dir(root: &Path, repo: &RepoPath) -> Option<PathBuf> {
    let bare = root.join(format!("{}.git", repo.as_str()));
    let plain = root.join(repo.as_str());
    [bare, plain].into_iter().find(|p| p.join("HEAD").is_file())
}

/// The symbolic refs among `names` in the repository at `dir`: name → target. One
/// `git for-each-ref` for the whole push.
pub fn symrefs(dir: &Path, names: &BTreeSet<&str>) -> std::io::Result<BTreeMap<String, String>> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(dir)
        .args(["for-each-ref", "--format=%(refname) %(symref)"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "git for-each-ref failed ({})",
            out.status
        )));
    }
    Ok(parse_symrefs(&String::from_utf8_lossy(&out.stdout), names))
}

/// The `refname symref` lines of `git for-each-ref` whose name was pushed and which point
/// somewhere.
fn parse_symrefs(text: &str, names: &BTreeSet<&str>) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, target)| !target.is_empty() && names.contains(name))
        .map(|(name, target)| (name.to_owned(), target.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symref_lines() {
        let names: BTreeSet<&str> = ["refs/heads/fix/a", "refs/heads/alias"].into();
        let text = "refs/heads/main \nrefs/heads/alias refs/heads/main\nrefs/heads/other refs/heads/main\nrefs/heads/fix/a \n";
        let m = parse_symrefs(text, &names);
        assert_eq!(m.len(), 1);
        assert_eq!(m["refs/heads/alias"], "refs/heads/main");
    }

    #[test]
    fn repositories_are_found_inside_the_root_only() {
        let root = tempfile::tempdir().expect("dir");
        let api = root.path().join("acme/api.git");
        std::fs::create_dir_all(&api).expect("mkdir");
        std::fs::write(api.join("HEAD"), "ref: refs/heads/main\n").expect("HEAD");
        let repo = RepoPath::parse("acme/api").expect("path");
        assert_eq!(dir(root.path(), &repo), Some(api));
        let other = RepoPath::parse("acme/api-private").expect("path");
        assert_eq!(dir(root.path(), &other), None);
    }
}
