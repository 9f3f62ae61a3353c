//! A real Git smart-HTTP server (nginx + fcgiwrap + `git http-backend`) serving bare
//! repositories from a temporary directory, and a `git` client with an isolated environment.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tempfile::TempDir;

use crate::process::{
    ManagedProcess, START_TIMEOUT, failed, find_program, free_port, run_checked, start_retrying,
    wait_ready,
};

/// Options for [`GitServer::start_with`].
#[derive(Clone, Debug, Default)]
pub struct GitServerConfig {
    /// Serve the bare repositories under this directory instead of a fresh temporary one.
    pub root: Option<PathBuf>,
    /// Require `Authorization: Basic` with this user and password on every request (the
    /// upstream credential a gateway must inject). `REMOTE_USER` is then that user.
    pub basic_auth: Option<(String, String)>,
    /// nginx directives added inside `location /` before the FastCGI ones, e.g.
    /// `auth_request /_authz;` to put the broker's `/authz` in front of `git http-backend`.
    pub location_directives: Option<String>,
    /// nginx directives added inside `server { }`, e.g. the `location = /_authz { … }` that
    /// proxies to the broker.
    pub server_directives: Option<String>,
    /// nginx directives added inside `http { }`, e.g. a whole second `server { }` such as
    /// deploy/nginx/git-jit-authz.conf. The placeholders `{{FCGI_SOCKET}}` (fcgiwrap's unix
    /// socket path), `{{GIT_PROJECT_ROOT}}` and `{{GIT_HTTP_BACKEND}}` are replaced.
    pub http_directives: Option<String>,
}

/// deploy/nginx/git-jit-authz.conf as shipped.
const AUTHZ_DEPLOY_CONF: &str = include_str!("../../deploy/nginx/git-jit-authz.conf");

/// The shipped deploy/nginx/git-jit-authz.conf (nginx asking the broker's `/authz` for every
/// request) for [`GitServerConfig::http_directives`]: the broker at `broker_port`, listening
/// on `listen_port`, the harness's paths. Every replaced line must be there exactly once, so
/// a change to the file's shape is noticed.
pub fn authz_deploy_conf(broker_port: u16, listen_port: u16) -> Result<String> {
    let mut text = AUTHZ_DEPLOY_CONF.to_owned();
    for (from, to) in [
        (
            "server 127.0.0.1:8080;",
            format!("server 127.0.0.1:{broker_port};"),
        ),
        ("listen 8081;", format!("listen 127.0.0.1:{listen_port};")),
        // The harness's nginx has no conf directory of its own.
        (
            "include fastcgi_params;",
            "include /etc/nginx/fastcgi_params;".into(),
        ),
        (
            "/usr/lib/git-core/git-http-backend",
            "{{GIT_HTTP_BACKEND}}".into(),
        ),
        (
            "GIT_PROJECT_ROOT /srv/git;",
            "GIT_PROJECT_ROOT {{GIT_PROJECT_ROOT}};".into(),
        ),
        ("unix:/run/fcgiwrap.socket", "unix:{{FCGI_SOCKET}}".into()),
    ] {
        ensure!(
            text.matches(from).count() == 1,
            "deploy/nginx/git-jit-authz.conf no longer has exactly one {from:?}"
        );
        text = text.replace(from, &to);
    }
    Ok(text)
}

/// nginx + fcgiwrap + `git http-backend` on a free port; push enabled; killed on drop.
#[derive(Debug)]
pub struct GitServer {
    // Field order matters: processes die before their directories are removed.
    nginx: ManagedProcess,
    _fcgiwrap: ManagedProcess,
    port: u16,
    root: PathBuf,
    config: GitServerConfig,
    _repos_dir: Option<TempDir>,
    _dir: TempDir,
}

impl GitServer {
    /// Starts a server for a fresh, empty repository root, without authentication.
    pub async fn start() -> Result<Self> {
        Self::start_with(GitServerConfig::default()).await
    }

    /// Starts a server with the given options.
    pub async fn start_with(config: GitServerConfig) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("jit-e2e-git-").tempdir()?;
        let (root, repos_dir) = match &config.root {
            Some(root) => (root.clone(), None),
            None => {
                let repos = tempfile::Builder::new()
                    .prefix("jit-e2e-repos-")
                    .tempdir()?;
                (repos.path().to_path_buf(), Some(repos))
            }
        };
        let socket = dir.path().join("fcgiwrap.sock");
        let mut fcgi_cmd = Command::new(find_program("fcgiwrap")?);
        fcgi_cmd.arg("-s").arg(format!("unix:{}", socket.display()));
        let fcgiwrap = ManagedProcess::spawn("fcgiwrap", fcgi_cmd, dir.path())?;
        let listening = || std::future::ready(socket.exists());
        let fcgiwrap = wait_ready(fcgiwrap, "fcgiwrap socket", START_TIMEOUT, None, listening)
            .await
            .map_err(|(e, _)| e)?;

        if let Some((user, pass)) = &config.basic_auth {
            // nginx understands the {PLAIN} scheme; fine for a test-only upstream.
            std::fs::write(
                dir.path().join("htpasswd"),
                format!("{user}:{{PLAIN}}{pass}\n"),
            )?;
        }
        let git_backend = git_exec_path()?.join("git-http-backend");
        let (nginx, port) = start_nginx("nginx", dir.path(), |port| {
            nginx_conf(dir.path(), port, &socket, &root, &git_backend, &config)
        })
        .await?;
        Ok(Self {
            nginx,
            _fcgiwrap: fcgiwrap,
            port,
            root,
            config,
            _repos_dir: repos_dir,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/<path>.git`
    pub fn repo_url(&self, path: &str) -> String {
        format!("{}/{path}.git", self.base_url())
    }

    /// Like [`GitServer::repo_url`] with the configured Basic credential in the URL.
    pub fn repo_url_with_credentials(&self, path: &str) -> String {
        match &self.config.basic_auth {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}/{path}.git", self.port),
            None => self.repo_url(path),
        }
    }

    /// The directory holding the bare repositories (`<root>/<path>.git`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The nginx process (for its log).
    pub fn nginx(&self) -> &ManagedProcess {
        &self.nginx
    }

    /// nginx's access log so far (combined format: `$remote_user` is the Basic user), to
    /// check what reached this server.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("logs/access.log")).unwrap_or_default()
    }

    /// Creates the bare repository `<root>/<path>.git` with one commit on `main`
    /// (`README.md`) and a lightweight tag `v0.1.0`. Returns the repository's directory.
    pub fn create_repo(&self, path: &str) -> Result<PathBuf> {
        create_bare_repo(&self.root, path)
    }

    /// Runs `git --git-dir=<repo> ARGS` on the server side (e.g. `rev-parse refs/heads/main`)
    /// and returns its trimmed stdout.
    pub fn git_in_repo(&self, path: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("git");
        isolate_git_env(&mut cmd, &self.root);
        cmd.arg("--git-dir")
            .arg(self.root.join(format!("{path}.git")))
            .args(args);
        Ok(run_checked(&mut cmd)?.trim().to_owned())
    }
}

/// Creates the bare repository `<root>/<path>.git` with one commit on `main` (`README.md`)
/// and a lightweight tag `v0.1.0`. Returns the repository's directory.
pub fn create_bare_repo(root: &Path, path: &str) -> Result<PathBuf> {
    let repo = root.join(format!("{path}.git"));
    std::fs::create_dir_all(&repo)?;
    let git = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new("git");
        isolate_git_env(&mut cmd, root);
        cmd.arg("--git-dir").arg(&repo).args(args);
        Ok(run_checked(&mut cmd)?.trim().to_owned())
    };
    git(&["init", "--bare", "--quiet", "--initial-branch=main"])?;
    let blob = hash_object(&repo, root, format!("# {path}\n").as_bytes())?;
    let tree = {
        let mut cmd = Command::new("git");
        isolate_git_env(&mut cmd, root);
        cmd.arg("--git-dir").arg(&repo).arg("mktree");
        stdin_checked(
            &mut cmd,
            format!("100644 blob {blob}\tREADME.md\n").as_bytes(),
        )?
    };
    let commit = git(&["commit-tree", &tree, "-m", "initial commit"])?;
    git(&["update-ref", "refs/heads/main", &commit])?;
    git(&["tag", "v0.1.0", &commit])?;
    Ok(repo)
}

fn hash_object(repo: &Path, home: &Path, content: &[u8]) -> Result<String> {
    let mut cmd = Command::new("git");
    isolate_git_env(&mut cmd, home);
    cmd.arg("--git-dir")
        .arg(repo)
        .args(["hash-object", "-w", "--stdin"]);
    stdin_checked(&mut cmd, content)
}

fn stdin_checked(cmd: &mut Command, input: &[u8]) -> Result<String> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    child
        .stdin
        .take()
        .context("stdin of git")?
        .write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `git --exec-path`: where `git-http-backend` lives.
fn git_exec_path() -> Result<PathBuf> {
    let out = run_checked(Command::new("git").arg("--exec-path"))?;
    Ok(PathBuf::from(out.trim()))
}

/// Makes `cmd` ignore the user's and the system's git configuration.
fn isolate_git_env(cmd: &mut Command, home: &Path) {
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_CONFIG_PARAMETERS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Harness")
        .env("GIT_AUTHOR_EMAIL", "harness@example.com")
        .env("GIT_COMMITTER_NAME", "Harness")
        .env("GIT_COMMITTER_EMAIL", "harness@example.com");
}

fn nginx_conf(
    dir: &Path,
    port: u16,
    socket: &Path,
    root: &Path,
    git_backend: &Path,
    config: &GitServerConfig,
) -> String {
    let d = dir.display();
    let auth = match &config.basic_auth {
        Some(_) => format!("auth_basic \"git\";\n            auth_basic_user_file {d}/htpasswd;\n"),
        None => String::new(),
    };
    let http = format!(
        r#"    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        {server_extra}
        location / {{
            {auth}
            {location_extra}
            fastcgi_pass unix:{socket};
            fastcgi_param REMOTE_USER $remote_user;
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
            fastcgi_param GIT_CONFIG_COUNT 1;
            fastcgi_param GIT_CONFIG_KEY_0 http.receivepack;
            fastcgi_param GIT_CONFIG_VALUE_0 true;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param HOME {d};
            fastcgi_request_buffering off;
            fastcgi_buffering off;
            fastcgi_read_timeout 300s;
        }}
    }}
    {http_extra}
"#,
        socket = socket.display(),
        backend = git_backend.display(),
        root = root.display(),
        server_extra = config.server_directives.as_deref().unwrap_or(""),
        location_extra = config.location_directives.as_deref().unwrap_or(""),
        http_extra = config
            .http_directives
            .as_deref()
            .unwrap_or("")
            .replace("{{FCGI_SOCKET}}", &socket.display().to_string())
            .replace("{{GIT_PROJECT_ROOT}}", &root.display().to_string())
            .replace("{{GIT_HTTP_BACKEND}}", &git_backend.display().to_string()),
    );
    nginx_conf_around(dir, &http)
}

/// A whole nginx configuration for the harness: one worker in the foreground, its pid, logs
/// and temporary files under `dir`, no cap on request bodies, and `http` inside `http { }`.
fn nginx_conf_around(dir: &Path, http: &str) -> String {
    let d = dir.display();
    format!(
        r#"# Generated by the git-jit test harness.
user root root;
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/client_body;
    fastcgi_temp_path {d}/tmp/fastcgi;
    proxy_temp_path {d}/tmp/proxy;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    client_max_body_size 0;
{http}
}}
"#
    )
}

/// The real `git` (first on PATH, or one chosen with [`GitClient::with_program`]) with its own HOME, XDG config and global config file, so
/// nothing from the machine's configuration leaks in. Commands run asynchronously, so an
/// in-process server on the test's runtime keeps serving while git runs.
#[derive(Debug)]
pub struct GitClient {
    home: TempDir,
    extra_env: Vec<(String, String)>,
    /// The git binary: `git` on PATH unless [`GitClient::with_program`] chose another.
    program: PathBuf,
}

impl GitClient {
    /// A fresh HOME with a global config holding only user.name, user.email and
    /// init.defaultBranch=main.
    pub fn new() -> Result<Self> {
        let home = tempfile::Builder::new().prefix("jit-e2e-home-").tempdir()?;
        std::fs::create_dir_all(home.path().join(".config"))?;
        std::fs::write(
            home.path().join(".gitconfig"),
            "[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        )?;
        Ok(Self {
            home,
            extra_env: Vec::new(),
            program: PathBuf::from("git"),
        })
    }

    /// Runs `program` instead of the `git` first on PATH (e.g. `/usr/bin/git`, an older git
    /// than the one the harness otherwise uses).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The isolated HOME (also a good place for work trees: `home().join("api")`).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Adds an environment variable to every command (e.g. `ACTIONS_ID_TOKEN_REQUEST_URL`,
    /// `PATH` with the helper's directory first).
    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.extra_env.push((
            key.to_owned(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    /// `git config --global KEY VALUE`
    pub async fn config(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["config", "--global", key, value])
            .await
            .map(drop)
    }

    /// A `tokio` command for `git ARGS` in HOME with the isolated environment.
    pub fn command<I, S>(&self, args: I) -> tokio::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut std_cmd = Command::new(&self.program);
        self.apply_env(&mut std_cmd);
        std_cmd.current_dir(self.home.path()).args(args);
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
        cmd
    }

    /// A blocking `std` command, same environment.
    pub fn std_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program);
        self.apply_env(&mut cmd);
        cmd.current_dir(self.home.path()).args(args);
        cmd
    }

    /// Runs `git ARGS` in HOME; fails (with stdout and stderr) unless it succeeds.
    pub async fn run(&self, args: &[&str]) -> Result<Output> {
        let out = self.output(args).await?;
        if !out.status.success() {
            bail!("git {args:?} failed ({}):\n{}", out.status, describe(&out));
        }
        Ok(out)
    }

    /// Runs `git -C DIR ARGS`; fails unless it succeeds.
    pub async fn run_in(&self, dir: &Path, args: &[&str]) -> Result<Output> {
        let mut full: Vec<&str> = vec!["-C"];
        let dir_str = dir.to_string_lossy();
        full.push(&dir_str);
        full.extend_from_slice(args);
        self.run(&full).await
    }

    /// Runs `git ARGS` and returns its output whatever the exit status (60 s timeout).
    pub async fn output(&self, args: &[&str]) -> Result<Output> {
        let fut = self.command(args).output();
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .with_context(|| format!("git {args:?} timed out"))?
            .with_context(|| format!("running git {args:?}"))
    }

    /// Runs `git ARGS`, expecting failure; returns its stderr.
    pub async fn run_expect_failure(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args).await?;
        if out.status.success() {
            bail!("git {args:?} unexpectedly succeeded:\n{}", describe(&out));
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn apply_env(&self, cmd: &mut Command) {
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_CONFIG_PARAMETERS",
            "GIT_ASKPASS",
            "SSH_ASKPASS",
            "GIT_CONFIG_COUNT",
        ] {
            cmd.env_remove(var);
        }
        let home = self.home.path();
        cmd.env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
    }
}

/// A command's exit status, stdout and stderr, for error messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A second nginx that only relays HTTP to an upstream (`proxy_pass`, unbuffered): the
/// reference for what one more loopback hop costs a clone, whatever program makes it.
#[derive(Debug)]
pub struct NginxRelay {
    nginx: ManagedProcess,
    port: u16,
    _dir: TempDir,
}

impl NginxRelay {
    /// Relays every request to `upstream` (`http://host:port`) in HTTP/1.0, as the gateway
    /// does for a clone's RPC, reading up to `read_size` bytes of the answer at a time
    /// (`proxy_buffer_size`) and passing them on at once (`proxy_buffering off`).
    pub async fn start(upstream: &str, read_size: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("jit-e2e-relay-")
            .tempdir()?;
        let (nginx, port) = start_nginx("nginx-relay", dir.path(), |port| {
            let http = format!(
                r#"    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.0;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size {read_size};
            proxy_buffers 4 {read_size};
            proxy_read_timeout 300s;
        }}
    }}"#
            );
            nginx_conf_around(dir.path(), &http)
        })
        .await?;
        Ok(Self {
            nginx,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The worker's parent (the master): its process group holds the worker.
    pub fn pid(&self) -> Option<u32> {
        self.nginx.pid()
    }
}

/// Starts nginx with the configuration `conf(port)` on a free port (another port if that one
/// was taken meanwhile), its logs, pid and temporary files under `dir`.
async fn start_nginx(
    name: &str,
    dir: &Path,
    conf: impl Fn(u16) -> String,
) -> Result<(ManagedProcess, u16)> {
    for sub in ["logs", "tmp", "tmp/client_body", "tmp/fastcgi"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let conf = &conf;
    start_retrying(name, move || async move {
        let port = free_port().map_err(failed)?;
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf(port)).map_err(|e| failed(e.into()))?;
        // Each try's own errors only: a collision of the try before is not this one's.
        let error_log = dir.join("logs/error.log");
        let _ = std::fs::remove_file(&error_log);
        let mut cmd = Command::new(find_program("nginx").map_err(failed)?);
        cmd.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(&error_log);
        let nginx = ManagedProcess::spawn(name, cmd, dir).map_err(failed)?;
        let ready = || async move { crate::process::port_is_open(port) };
        let what = format!("{name} on port {port}");
        let nginx = wait_ready(nginx, &what, START_TIMEOUT, Some(&error_log), ready).await?;
        Ok((nginx, port))
    })
    .await
}
