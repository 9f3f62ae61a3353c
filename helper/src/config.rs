//! Where git-jit keeps its files and how it is configured: the XDG directories (overridable
//! with `GIT_JIT_CONFIG_DIR` / `GIT_JIT_CACHE_DIR`), the optional `config.toml`, and the
//! environment overlay (`GIT_JIT_BROKER`, `GIT_JIT_AUDIENCE`, `GIT_JIT_ID_TOKEN_ENV`,
//! `GIT_JIT_ID_TOKEN_FILE`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Reads an environment variable; injected so tests never touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The environment variable naming the broker's URL.
pub const ENV_BROKER: &str = "GIT_JIT_BROKER";
/// The environment variable naming the audience CI identity tokens are requested for.
pub const ENV_AUDIENCE: &str = "GIT_JIT_AUDIENCE";
/// The environment variable that overrides the configuration directory.
pub const ENV_CONFIG_DIR: &str = "GIT_JIT_CONFIG_DIR";
/// The environment variable that overrides the cache directory.
pub const ENV_CACHE_DIR: &str = "GIT_JIT_CACHE_DIR";
/// The environment variable naming the variable that holds a CI ID token.
pub const ENV_ID_TOKEN_ENV: &str = "GIT_JIT_ID_TOKEN_ENV";
/// The environment variable naming a file that holds an ID token.
pub const ENV_ID_TOKEN_FILE: &str = "GIT_JIT_ID_TOKEN_FILE";
/// The default variable for a CI ID token (GitLab `id_tokens:`, or anything else).
pub const DEFAULT_ID_TOKEN_ENV: &str = "GIT_JIT_ID_TOKEN";

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither the override, XDG variable nor `HOME` is set.
    #[error("cannot find a {0} directory: set HOME, XDG_{1}_HOME or GIT_JIT_{1}_DIR")]
    NoDir(&'static str, &'static str),
    /// The config file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The key and what is wrong with it.
        source: toml::de::Error,
    },
    /// The config file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The directories git-jit uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `config.toml` and the login session (`session.json`).
    pub config: PathBuf,
    /// The token cache (`tokens.json`).
    pub cache: PathBuf,
}

impl Dirs {
    /// Resolves the directories from the environment.
    pub fn from_env(env: Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            config: dir(env, ENV_CONFIG_DIR, "XDG_CONFIG_HOME", ".config")
                .ok_or(ConfigError::NoDir("config", "CONFIG"))?,
            cache: dir(env, ENV_CACHE_DIR, "XDG_CACHE_HOME", ".cache")
                .ok_or(ConfigError::NoDir("cache", "CACHE"))?,
        })
    }

    /// The config file.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }
}

fn dir(env: Env<'_>, own: &str, xdg: &str, fallback: &str) -> Option<PathBuf> {
    if let Some(d) = env(own) {
        return Some(PathBuf::from(d));
    }
    // The XDG spec says relative values are invalid and must be ignored.
    if let Some(d) = env(xdg).map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(d.join("git-jit"));
    }
    env("HOME").map(|h| Path::new(&h).join(fallback).join("git-jit"))
}

/// `config.toml`. Every field is optional; the environment overrides each.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The broker's base URL (`https://git.example.com`). Without it the helper uses the
    /// origin of the Git URL it is asked about (the gateway is the broker).
    pub broker: Option<String>,
    /// Git servers other than the broker that take its tokens (an nginx `auth_request`
    /// front, `https://git.example.com`), recorded by `git jit setup`. A token goes only to
    /// the broker's origin and path prefix or to one of these, never to another host.
    #[serde(default)]
    pub servers: Vec<String>,
    /// The audience CI identity tokens are requested for (GitHub Actions). Default: the
    /// configured broker's URL, which is also the broker's default.
    pub audience: Option<String>,
    /// The environment variable that holds a CI ID token (GitLab `id_tokens:` name).
    pub id_token_env: Option<String>,
    /// A file that holds an ID token, re-read each time (Kubernetes projected token).
    pub id_token_file: Option<PathBuf>,
}

/// The effective settings: directories, file config and environment merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where files go.
    pub dirs: Dirs,
    /// The broker's base URL, when configured.
    pub broker: Option<String>,
    /// Git servers other than the broker that take its tokens.
    pub servers: Vec<String>,
    /// The audience CI identity tokens are requested for, when configured.
    pub audience: Option<String>,
    /// The variable that holds a CI ID token.
    pub id_token_env: String,
    /// A file that holds an ID token.
    pub id_token_file: Option<PathBuf>,
}

impl Settings {
    /// Loads `config.toml` (if present) and overlays the environment and a `--broker` flag.
    pub fn load(env: Env<'_>, broker_flag: Option<&str>) -> Result<Self, ConfigError> {
        let dirs = Dirs::from_env(env)?;
        let path = dirs.config_file();
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Ok(Self {
            broker: broker_flag
                .map(str::to_owned)
                .or_else(|| env(ENV_BROKER))
                .or(file.broker),
            servers: file.servers,
            audience: env(ENV_AUDIENCE).or(file.audience),
            id_token_env: env(ENV_ID_TOKEN_ENV)
                .or(file.id_token_env)
                .unwrap_or_else(|| DEFAULT_ID_TOKEN_ENV.to_owned()),
            id_token_file: env(ENV_ID_TOKEN_FILE)
                .map(PathBuf::from)
                .or(file.id_token_file),
            dirs,
        })
    }
}

/// Records `broker` in `config.toml` unless one is already there (used by `git jit setup`).
/// Returns whether the file changed.
pub fn remember_broker(dirs: &Dirs, broker: &str) -> Result<bool, ConfigError> {
    let path = dirs.config_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let current: FileConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.clone(),
        source,
    })?;
    if current.broker.is_some() {
        return Ok(false);
    }
    let line = format!("broker = {}\n", toml::Value::String(broker.to_owned()));
    let mut new = line;
    new.push_str(&text);
    let write = |p: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(&dirs.config)?;
        std::fs::write(p, &new)
    };
    write(&path).map_err(|source| ConfigError::Write { path, source })?;
    Ok(true)
}

/// Records `url` in `servers` of `config.toml` (used by `git jit setup` for a Git server
/// that is not the broker). Returns whether the file changed.
pub fn remember_server(dirs: &Dirs, url: &str) -> Result<bool, ConfigError> {
    let path = dirs.config_file();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let parse_err = |source| ConfigError::Parse {
        path: path.clone(),
        source,
    };
    let current: FileConfig = toml::from_str(&text).map_err(parse_err)?;
    if current.servers.iter().any(|s| s == url) {
        return Ok(false);
    }
    let new = if current.servers.is_empty() {
        // Every key is top-level: a line before the rest keeps the person's comments.
        let list = toml::Value::Array(vec![toml::Value::String(url.to_owned())]);
        format!("servers = {list}\n{text}")
    } else {
        let mut table: toml::Table = toml::from_str(&text).map_err(parse_err)?;
        let mut servers = current.servers;
        servers.push(url.to_owned());
        table.insert(
            "servers".into(),
            toml::Value::Array(servers.into_iter().map(toml::Value::String).collect()),
        );
        toml::to_string(&table).map_err(|e| ConfigError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?
    };
    let write = |p: &Path| -> std::io::Result<()> {
        std::fs::create_dir_all(&dirs.config)?;
        std::fs::write(p, &new)
    };
    write(&path).map_err(|source| ConfigError::Write { path, source })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn xdg_dirs_and_overrides() {
        let env = env_of(&[("HOME", "/home/a")]);
        let d = Dirs::from_env(&env).expect("dirs");
        assert_eq!(d.config, PathBuf::from("/home/a/.config/git-jit"));
        assert_eq!(d.cache, PathBuf::from("/home/a/.cache/git-jit"));

        let env = env_of(&[
            ("HOME", "/h"),
            ("XDG_CONFIG_HOME", "/x/c"),
            ("XDG_CACHE_HOME", "rel"),
        ]);
        let d = Dirs::from_env(&env).expect("dirs");
        assert_eq!(d.config, PathBuf::from("/x/c/git-jit"));
        assert_eq!(
            d.cache,
            PathBuf::from("/h/.cache/git-jit"),
            "relative XDG ignored"
        );

        let env = env_of(&[
            ("GIT_JIT_CONFIG_DIR", "/o/c"),
            ("GIT_JIT_CACHE_DIR", "/o/k"),
        ]);
        let d = Dirs::from_env(&env).expect("dirs");
        assert_eq!(
            (d.config, d.cache),
            (PathBuf::from("/o/c"), PathBuf::from("/o/k"))
        );

        assert!(Dirs::from_env(&env_of(&[])).is_err());
    }

    #[test]
    fn file_then_env_then_flag() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = tmp.path().to_str().expect("utf8").to_owned();
        std::fs::write(
            tmp.path().join("config.toml"),
            "broker = \"https://file\"\nid_token_env = \"CI_JIT\"\n",
        )
        .expect("write");
        let env = env_of(&[("GIT_JIT_CONFIG_DIR", &cfg), ("GIT_JIT_CACHE_DIR", &cfg)]);
        let s = Settings::load(&env, None).expect("load");
        assert_eq!(s.broker.as_deref(), Some("https://file"));
        assert_eq!(s.id_token_env, "CI_JIT");

        let env = env_of(&[
            ("GIT_JIT_CONFIG_DIR", &cfg),
            ("GIT_JIT_CACHE_DIR", &cfg),
            ("GIT_JIT_BROKER", "https://env"),
        ]);
        assert_eq!(
            Settings::load(&env, None).expect("load").broker.as_deref(),
            Some("https://env")
        );
        let s = Settings::load(&env, Some("https://flag")).expect("load");
        assert_eq!(s.broker.as_deref(), Some("https://flag"));
    }

    #[test]
    fn bad_config_names_file_and_key() {
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = tmp.path().to_str().expect("utf8").to_owned();
        std::fs::write(tmp.path().join("config.toml"), "brokr = \"x\"\n").expect("write");
        let env = env_of(&[("GIT_JIT_CONFIG_DIR", &cfg), ("GIT_JIT_CACHE_DIR", &cfg)]);
        let err = Settings::load(&env, None)
            .expect_err("unknown key")
            .to_string();
        assert!(
            err.contains("config.toml") && err.contains("brokr"),
            "{err}"
        );
    }

    #[test]
    fn remembers_broker_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dirs = Dirs {
            config: tmp.path().join("c"),
            cache: tmp.path().join("k"),
        };
        assert!(remember_broker(&dirs, "https://a").expect("write"));
        assert!(!remember_broker(&dirs, "https://b").expect("kept"));
        let text = std::fs::read_to_string(dirs.config_file()).expect("read");
        assert_eq!(text, "broker = \"https://a\"\n");
    }

    #[test]
    fn remembers_each_server_once() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dirs = Dirs {
            config: tmp.path().join("c"),
            cache: tmp.path().join("k"),
        };
        assert!(remember_broker(&dirs, "https://jit").expect("write"));
        assert!(remember_server(&dirs, "https://git").expect("write"));
        assert!(!remember_server(&dirs, "https://git").expect("kept"));
        assert!(remember_server(&dirs, "https://git2").expect("write"));
        let cfg = dirs.config.to_str().expect("utf8").to_owned();
        let env = env_of(&[
            ("GIT_JIT_CONFIG_DIR", &cfg),
            ("GIT_JIT_CACHE_DIR", &cfg),
            ("GIT_JIT_AUDIENCE", "https://aud"),
        ]);
        let s = Settings::load(&env, None).expect("load");
        assert_eq!(s.broker.as_deref(), Some("https://jit"));
        assert_eq!(s.servers, ["https://git", "https://git2"]);
        assert_eq!(s.audience.as_deref(), Some("https://aud"));
    }
}
