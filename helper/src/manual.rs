//! The manual: man pages generated from the clap definitions — `git-jit.1`, one page per
//! subcommand (`git-jit-login.1`, `git-jit-admin-grants.1`, …) and `git-credential-jit.1` —
//! written where `man` looks. git answers `git jit --help` with `man git-jit`, so without
//! these pages the only help git offers is "No manual entry for git-jit".

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use clap::CommandFactory;

use crate::config::Env;

/// One generated man page.
#[derive(Debug, Clone)]
pub struct Page {
    /// The page's name, e.g. `git-jit-login` (its file is `git-jit-login.1`).
    pub name: String,
    /// The page in roff, as `man` reads it.
    pub roff: Vec<u8>,
}

impl Page {
    /// The file name in a `man1` directory.
    pub fn file_name(&self) -> String {
        format!("{}.1", self.name)
    }
}

/// Every page: `git-jit` (its command line, `git_jit`), each of its subcommands (nested ones
/// named after their path, as git names its own: `git-jit-admin-grants`), and
/// `git-credential-jit`.
pub fn pages(git_jit: &clap::Command) -> io::Result<Vec<Page>> {
    let mut out = Vec::new();
    let mut git_jit = git_jit.clone();
    git_jit.build();
    walk(&git_jit, "git-jit", "git jit", &mut out)?;
    let mut helper = crate::credential::CredentialArgs::command();
    helper.build();
    walk(
        &helper,
        "git-credential-jit",
        "git credential-jit",
        &mut out,
    )?;
    Ok(out)
}

/// Renders `cmd` as page `name`, its synopsis saying `usage` (as typed: `git jit request`),
/// then each subcommand.
fn walk(cmd: &clap::Command, name: &str, usage: &str, out: &mut Vec<Page>) -> io::Result<()> {
    let named = cmd.clone().name(name.to_owned()).bin_name(usage.to_owned());
    let mut roff = Vec::new();
    clap_mangen::Man::new(named).render(&mut roff)?;
    out.push(Page {
        name: name.to_owned(),
        roff,
    });
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = sub.get_name();
        walk(
            sub,
            &format!("{name}-{sub_name}"),
            &format!("{usage} {sub_name}"),
            out,
        )?;
    }
    Ok(())
}

/// Where the user's own man pages go: `$XDG_DATA_HOME/man/man1`, else
/// `~/.local/share/man/man1` (both on man-db's search path when `~/.local/bin` is on PATH).
pub fn user_man_dir(env: Env<'_>) -> Option<PathBuf> {
    let data = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local").join("share")))?;
    Some(data.join("man").join("man1"))
}

/// Writes every page into `dir` (created if missing); returns how many were written.
pub fn install(dir: &Path, git_jit: &clap::Command) -> io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let pages = pages(git_jit)?;
    for p in &pages {
        std::fs::write(dir.join(p.file_name()), &p.roff)?;
    }
    Ok(pages.len())
}

/// Where each shell loads a user's completions from, for `git-jit`: bash-completion's
/// per-command directory, zsh's `site-functions` under the data home (add it to `fpath`), and
/// fish's completions directory.
pub fn user_completion_files(env: Env<'_>) -> Option<Vec<(clap_complete::Shell, PathBuf)>> {
    use clap_complete::Shell;
    let home = env("HOME").map(PathBuf::from);
    let data = env("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.as_ref().map(|h| h.join(".local").join("share")))?;
    let config = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.as_ref().map(|h| h.join(".config")))?;
    Some(vec![
        (
            Shell::Bash,
            data.join("bash-completion")
                .join("completions")
                .join("git-jit"),
        ),
        (
            Shell::Zsh,
            data.join("zsh").join("site-functions").join("_git-jit"),
        ),
        (
            Shell::Fish,
            config.join("fish").join("completions").join("git-jit.fish"),
        ),
    ])
}

/// Writes the completion scripts of `files` (from [`user_completion_files`]) and says where.
pub fn install_completions(
    files: &[(clap_complete::Shell, PathBuf)],
    git_jit: &clap::Command,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    for (shell, path) in files {
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut git_jit.clone(), "git-jit", &mut script);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, script)?;
        writeln!(out, "completions ({shell}): {}", path.display())?;
    }
    Ok(())
}

/// Whether `man` finds the page `name` as it is configured now (`man -w`). `None` when
/// `man` cannot be run at all.
pub fn man_finds(name: &str) -> Option<bool> {
    Process::new("man")
        .args(["-w", name])
        .output()
        .ok()
        .map(|o| o.status.success())
}

/// Installs the pages into `dir` and says where, and — when `man` still cannot find them —
/// how to make it look there.
pub fn install_and_report(
    dir: &Path,
    git_jit: &clap::Command,
    out: &mut dyn io::Write,
) -> io::Result<()> {
    let n = install(dir, git_jit)?;
    writeln!(out, "man pages: {n} written to {}", dir.display())?;
    match man_finds("git-jit") {
        Some(true) => {}
        Some(false) => {
            // MANPATH names the directory above man1; a trailing ':' keeps the defaults.
            let root = dir.parent().unwrap_or(dir);
            writeln!(
                out,
                "man does not look there yet; add to your shell profile: export MANPATH=\"{}:$MANPATH\"",
                root.display()
            )?;
        }
        None => writeln!(
            out,
            "man is not installed; the pages are there for when it is"
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `git jit`'s command line, as the binary builds it.
    fn git_jit() -> clap::Command {
        crate::cli::Cli::command()
    }

    #[test]
    fn completions_go_where_each_shell_looks() {
        let tmp = tempfile::tempdir().expect("tmp");
        let home = tmp.path().to_string_lossy().into_owned();
        let env = move |k: &str| (k == "HOME").then(|| home.clone());
        let files = user_completion_files(&env).expect("paths");
        let mut said = Vec::new();
        install_completions(&files, &git_jit(), &mut said).expect("written");
        let said = String::from_utf8(said).expect("utf8");
        for (shell, path) in &files {
            let text = std::fs::read_to_string(path).expect("script");
            assert!(text.contains("git-jit"), "{shell}: {text}");
            assert!(said.contains(&path.display().to_string()));
        }
        assert!(
            files[0]
                .1
                .ends_with(".local/share/bash-completion/completions/git-jit")
        );
        assert!(
            files[2]
                .1
                .ends_with(".config/fish/completions/git-jit.fish")
        );
        let nowhere = |_: &str| None;
        assert!(user_completion_files(&nowhere).is_none());
    }

    #[test]
    fn a_page_per_command_and_subcommand() {
        let pages = pages(&git_jit()).expect("pages");
        let names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
        let cli = crate::cli::Cli::command();
        for sub in cli.get_subcommands() {
            let want = format!("git-jit-{}", sub.get_name());
            assert!(
                names.contains(&want.as_str()),
                "{want} missing from {names:?}"
            );
            for nested in sub.get_subcommands() {
                let want = format!("git-jit-{}-{}", sub.get_name(), nested.get_name());
                assert!(names.contains(&want.as_str()), "{want} missing");
            }
        }
        for want in [
            "git-jit",
            "git-credential-jit",
            "git-jit-login",
            "git-jit-request",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.ends_with("-help")), "{names:?}");
        for p in &pages {
            let text = String::from_utf8_lossy(&p.roff);
            assert!(text.starts_with(".ie"), "{}: {text:.60}", p.name);
            assert!(text.contains(&format!(".TH {} 1", p.name)), "{}", p.name);
        }
        let request = pages.iter().find(|p| p.name == "git-jit-request");
        let text = String::from_utf8_lossy(&request.expect("request page").roff).into_owned();
        assert!(text.contains("reason"), "the options are documented");
        assert!(text.contains("git jit request"), "the synopsis is as typed");
    }

    #[test]
    fn user_dir_follows_xdg_then_home() {
        let env = |k: &str| (k == "HOME").then(|| "/home/a".to_owned());
        assert_eq!(
            user_man_dir(&env),
            Some(PathBuf::from("/home/a/.local/share/man/man1"))
        );
        let env = |k: &str| match k {
            "HOME" => Some("/home/a".to_owned()),
            "XDG_DATA_HOME" => Some("/d".to_owned()),
            _ => None,
        };
        assert_eq!(user_man_dir(&env), Some(PathBuf::from("/d/man/man1")));
        let relative = |k: &str| match k {
            "HOME" => Some("/home/a".to_owned()),
            "XDG_DATA_HOME" => Some("rel".to_owned()),
            _ => None,
        };
        assert_eq!(
            user_man_dir(&relative),
            Some(PathBuf::from("/home/a/.local/share/man/man1"))
        );
        assert_eq!(user_man_dir(&|_: &str| None), None);
    }

    /// Renders the installed pages with `man` itself, when this machine has it.
    #[test]
    fn man_renders_the_installed_pages() {
        let man = Process::new("man").arg("--version").output();
        if !man.is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: man is not installed");
            return;
        }
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("man1");
        let n = install(&dir, &git_jit()).expect("install");
        assert!(n > 10, "{n} pages");
        for (page, says) in [
            ("git-jit", "Just-in-time access"),
            ("git-jit-login", "device flow"),
            ("git-credential-jit", "credential helper"),
        ] {
            let out = Process::new("man")
                .arg("-l")
                .arg(dir.join(format!("{page}.1")))
                .env("MANPAGER", "cat")
                .env("MANWIDTH", "200")
                .output()
                .expect("man runs");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{page}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains(says), "{page} lacks {says:?}:\n{text}");
            // groff warnings mean a page is broken.
            assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
        }
        // With MANPATH naming the directory, `man -w` finds them by name.
        let found = Process::new("man")
            .args(["-w", "git-jit-request"])
            .env("MANPATH", root.path())
            .output()
            .expect("man runs");
        assert!(found.status.success());
        assert!(String::from_utf8_lossy(&found.stdout).contains("git-jit-request.1"));
    }
}
