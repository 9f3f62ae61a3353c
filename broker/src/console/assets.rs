//! The console's stylesheet and script, embedded in the binary and served under names that
//! carry their content hash (`console-<hash>.css`), so they are cached for good and a new
//! broker never meets a stale copy.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its name under `/console/assets/`, with the content hash.
    pub name: String,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The embedded files.
#[derive(Debug)]
pub struct Assets {
    /// The stylesheet.
    pub css: Asset,
    /// The script (countdowns, local times, filtering, confirmations).
    pub js: Asset,
}

fn asset(stem: &str, ext: &str, content_type: &'static str, body: &'static [u8]) -> Asset {
    let hash = hex::encode(&Sha256::digest(body)[..8]);
    Asset {
        name: format!("{stem}-{hash}.{ext}"),
        content_type,
        body,
    }
}

/// The embedded files, hashed once.
pub fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| Assets {
        css: asset(
            "console",
            "css",
            "text/css; charset=utf-8",
            include_bytes!("console.css"),
        ),
        js: asset(
            "console",
            "js",
            "text/javascript; charset=utf-8",
            include_bytes!("console.js"),
        ),
    })
}

/// The asset called `name`, if any.
pub fn find(name: &str) -> Option<&'static Asset> {
    let a = assets();
    [&a.css, &a.js].into_iter().find(|x| x.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        let a = assets();
        let hash = hex::encode(&Sha256::digest(a.css.body)[..8]);
        assert_eq!(a.css.name, format!("console-{hash}.css"));
        assert!(find(&a.js.name).is_some());
        assert!(
            find("console.js").is_none(),
            "only the hashed name is served"
        );
    }
}
