//! Who is *one* caller, for the per-identity exchange limit. A person is their issuer and
//! subject. A CI platform's subject names a repository or a project and a ref
//! (`repo:acme/api:ref:refs/heads/main`), shared by every job of a matrix build and by every
//! build of that branch; keyed by it, a 500-job matrix would be one caller with the budget of
//! one. So a token that carries the claims naming one CI job is keyed by them too:
//!
//! | platform | claims (all verified, chosen by the platform, never by the job) |
//! |---|---|
//! | GitHub Actions | `run_id`, `run_attempt`, and `check_run_id` (one job) when present |
//! | GitLab CI | `pipeline_id`, `job_id` |
//! | Kubernetes (projected service-account token) | `kubernetes.io.pod.uid` |
//!
//! A job cannot widen its budget: a new token from the same job carries the same run, job or
//! pod, and only `jti`, `iat` and `exp` change — none is part of the key. A shape is taken
//! only whole (GitHub's needs `repository` beside the run, GitLab's `project_path` beside the
//! job), so a person's SSO token with a stray `job_id` attribute stays keyed by its subject.

use serde_json::{Map, Value};

use super::{VerifiedIdentity, scalar_text};

/// Longest claim value taken into a key; longer ones are cut (keys stay small).
const VALUE_MAX: usize = 128;

fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(scalar_text)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(VALUE_MAX).collect())
}

/// The part of the key naming one CI job, when the claims are a known CI platform's.
fn job(claims: &Map<String, Value>) -> Option<String> {
    if claims.contains_key("repository")
        && let (Some(run), Some(attempt)) = (text(claims, "run_id"), text(claims, "run_attempt"))
    {
        let check = text(claims, "check_run_id").unwrap_or_default();
        return Some(format!("github-run:{run}:{attempt}:{check}"));
    }
    if claims.contains_key("project_path")
        && let (Some(pipeline), Some(job)) = (text(claims, "pipeline_id"), text(claims, "job_id"))
    {
        return Some(format!("gitlab-job:{pipeline}:{job}"));
    }
    let pod = claims
        .get("kubernetes.io")
        .and_then(|k| k.get("pod"))
        .and_then(|p| p.get("uid"))
        .and_then(scalar_text)
        .filter(|s| !s.is_empty())?;
    Some(format!(
        "k8s-pod:{}",
        pod.chars().take(VALUE_MAX).collect::<String>()
    ))
}

impl VerifiedIdentity {
    /// The key of the per-identity exchange limit: the issuer and subject, and for a CI job
    /// the claims naming that one job (see the module's table).
    pub fn limit_key(&self) -> String {
        match job(&self.claims) {
            Some(job) => format!("{} {} {job}", self.issuer, self.subject),
            None => format!("{} {}", self.issuer, self.subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn identity(claims: Value) -> VerifiedIdentity {
        let Value::Object(claims) = claims else {
            panic!("claims are an object")
        };
        VerifiedIdentity {
            issuer: "ci".into(),
            subject: "repo:acme/api:ref:refs/heads/main".into(),
            claims,
        }
    }

    fn github(run: &str, attempt: &str, jti: &str) -> VerifiedIdentity {
        identity(json!({
            "sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api",
            "run_id": run, "run_attempt": attempt, "jti": jti, "iat": 1, "exp": 2
        }))
    }

    #[test]
    fn each_github_run_is_its_own_caller_and_a_run_cannot_make_more() {
        let a = github("100", "1", "t1");
        assert_eq!(
            a.limit_key(),
            "ci repo:acme/api:ref:refs/heads/main github-run:100:1:"
        );
        // The same job asking for a fresh token (new jti, times) is the same caller.
        assert_eq!(a.limit_key(), github("100", "1", "t2").limit_key());
        // Another run of the same branch, or a re-run, is another caller.
        assert_ne!(a.limit_key(), github("101", "1", "t1").limit_key());
        assert_ne!(a.limit_key(), github("100", "2", "t1").limit_key());
    }

    #[test]
    fn github_jobs_of_one_run_are_apart_when_the_token_names_the_job() {
        let job = |check: u64| {
            identity(json!({
                "repository": "acme/api", "run_id": "7", "run_attempt": "1", "check_run_id": check
            }))
        };
        assert_ne!(job(1).limit_key(), job(2).limit_key());
    }

    #[test]
    fn gitlab_jobs_and_kubernetes_pods_are_their_own_callers() {
        let gl = |job: &str| {
            identity(json!({"project_path": "acme/api", "pipeline_id": "9", "job_id": job}))
        };
        assert_ne!(gl("1").limit_key(), gl("2").limit_key());
        assert!(gl("1").limit_key().ends_with("gitlab-job:9:1"));
        let pod = |uid: &str| {
            identity(
                json!({"kubernetes.io": {"namespace": "ci", "pod": {"name": "p", "uid": uid}}}),
            )
        };
        assert_ne!(pod("a").limit_key(), pod("b").limit_key());
        assert!(pod("a").limit_key().ends_with("k8s-pod:a"));
    }

    /// A person is their subject, whatever else the token carries: claims that vary per token
    /// (`jti`, `nonce`, times) or a partial CI shape do not make new callers.
    #[test]
    fn people_and_partial_shapes_are_keyed_by_subject() {
        let person = |extra: Value| {
            let mut c = json!({"sub": "alice", "jti": "x", "nonce": "n", "iat": 1});
            if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
                c.extend(e);
            }
            identity(c)
        };
        let plain = "ci repo:acme/api:ref:refs/heads/main";
        assert_eq!(person(json!({})).limit_key(), plain);
        assert_eq!(person(json!({"job_id": "42"})).limit_key(), plain);
        assert_eq!(
            person(json!({"run_id": "1", "run_attempt": "1"})).limit_key(),
            plain
        );
        assert_eq!(
            person(json!({"kubernetes.io": {"pod": {}}})).limit_key(),
            plain
        );
        assert_eq!(person(json!({"jti": "y"})).limit_key(), plain);
    }

    #[test]
    fn long_values_are_cut() {
        let long = "9".repeat(10_000);
        let k = github(&long, "1", "t").limit_key();
        assert!(k.len() < 300, "{}", k.len());
    }
}
