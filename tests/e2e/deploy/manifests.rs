//! deploy/kubernetes/broker.yaml read into the Kubernetes API's own types (`k8s-openapi`), and
//! deploy/compose.yaml, each held to the example config and the image: numeric user, group
//! for the keys, read-only root with a volume wherever the config writes, probes, disruption
//! budget, network policy, service.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service, Volume};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use super::{example, read, writable_paths};

/// The image's `USER uid:gid` (the runtime stage's).
fn image_user() -> Result<(i64, i64)> {
    let file = read("deploy/container/Containerfile")?;
    let user = file
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .context("the Containerfile sets USER")?;
    let (uid, gid) = user.trim().split_once(':').context("USER uid:gid")?;
    Ok((uid.parse()?, gid.parse()?))
}

/// One document as `T`, refusing any field `T` does not know (it would be dropped silently by
/// the API types and ignored by the cluster): the typed value, written back, must be the
/// document.
fn typed<T: DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<T> {
    let t: T = serde_yaml_ng::from_value(doc.clone())?;
    let back = serde_yaml_ng::to_value(&t)?;
    ensure!(
        &back == doc,
        "a field is unknown to the API or misspelt:\nread:\n{}\nunderstood:\n{}",
        serde_yaml_ng::to_string(doc)?,
        serde_yaml_ng::to_string(&back)?
    );
    Ok(t)
}

struct Manifests {
    deployment: Deployment,
    pdb: PodDisruptionBudget,
    service: Service,
    policy: NetworkPolicy,
}

fn manifests() -> Result<Manifests> {
    let text = read("deploy/kubernetes/broker.yaml")?;
    let mut by_kind: BTreeMap<String, Value> = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc)?;
        let kind = v["kind"]
            .as_str()
            .context("a document without kind")?
            .to_owned();
        ensure!(by_kind.insert(kind.clone(), v).is_none(), "two {kind}s");
    }
    let get = |k: &str| by_kind.get(k).with_context(|| format!("no {k}"));
    Ok(Manifests {
        deployment: typed(get("Deployment")?)?,
        pdb: typed(get("PodDisruptionBudget")?)?,
        service: typed(get("Service")?)?,
        policy: typed(get("NetworkPolicy")?)?,
    })
}

use serde::Deserialize as _;

fn pod(m: &Manifests) -> Result<(&PodSpec, &BTreeMap<String, String>)> {
    let spec = m.deployment.spec.as_ref().context("spec")?;
    let template = &spec.template;
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .context("pod labels")?;
    Ok((template.spec.as_ref().context("pod spec")?, labels))
}

fn broker(spec: &PodSpec) -> Result<&Container> {
    spec.containers.first().context("a container")
}

fn volume<'a>(spec: &'a PodSpec, name: &str) -> Result<&'a Volume> {
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .with_context(|| format!("volume {name}"))
}

fn selects(selector: Option<&BTreeMap<String, String>>, labels: &BTreeMap<String, String>) -> bool {
    selector.is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn kubernetes_runs_two_replicas_as_a_numeric_user_with_a_read_only_root() -> Result<()> {
    let m = manifests()?;
    let (_, config) = example()?;
    let (uid, gid) = image_user()?;
    let spec = m.deployment.spec.as_ref().context("spec")?;
    assert_eq!(spec.replicas, Some(2));
    let (pod, _) = pod(&m)?;
    // The kubelet refuses runAsNonRoot with a user it cannot check: the user must be a number,
    // the image's own.
    let psc = pod
        .security_context
        .as_ref()
        .context("pod securityContext")?;
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.run_as_user, Some(uid));
    assert_eq!(psc.run_as_group, Some(gid));
    assert_ne!(psc.run_as_user, Some(0));
    // The Secret's files are root's; fsGroup makes them the broker's group's.
    assert_eq!(
        psc.fs_group,
        Some(gid),
        "fsGroup gives the keys to the broker's group"
    );
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    let c = broker(pod)?;
    let csc = c
        .security_context
        .as_ref()
        .context("container securityContext")?;
    assert_eq!(csc.read_only_root_filesystem, Some(true));
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(csc.run_as_non_root, Some(true));
    let drop = csc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"]);
    // The config's path is the one the container is told to read.
    let args = c.args.clone().unwrap_or_default();
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].clone())
        .context("--config")?;
    ensure!(
        mounts
            .iter()
            .any(|m| m.mount_path == config_path && m.read_only == Some(true)),
        "{config_path} is mounted read-only"
    );
    // The keys: a Secret no other user may read and no group may write (the broker's rule:
    // root's, readable by its group alone).
    let keys = mounts
        .iter()
        .find(|m| Path::new(&m.mount_path) == config.broker.keys_dir)
        .with_context(|| format!("{} is mounted", config.broker.keys_dir.display()))?;
    assert_eq!(keys.read_only, Some(true));
    let secret = volume(pod, &keys.name)?
        .secret
        .as_ref()
        .context("keys from a Secret")?;
    let mode = secret.default_mode.context("defaultMode")?;
    assert_eq!(mode & 0o037, 0, "keys mode {mode:o}: group write or others");
    assert_eq!(
        mode & 0o040,
        0o040,
        "keys mode {mode:o}: the group reads them"
    );
    // Every folder the example config writes is a writable volume, not the read-only root.
    for path in writable_paths(&config)? {
        let m = mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .with_context(|| {
                format!(
                    "{} (written by the example config) is on a volume",
                    path.display()
                )
            })?;
        assert_ne!(m.read_only, Some(true), "{} is writable", m.mount_path);
        let v = volume(pod, &m.name)?;
        ensure!(
            v.empty_dir.is_some() || v.persistent_volume_claim.is_some() || v.ephemeral.is_some(),
            "{} is a writable volume",
            m.mount_path
        );
    }
    Ok(())
}

#[test]
fn kubernetes_probes_budget_policy_and_service_reach_the_broker() -> Result<()> {
    let m = manifests()?;
    let (_, config) = example()?;
    let (pod, labels) = pod(&m)?;
    let c = broker(pod)?;
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .context("port http")?;
    assert_eq!(port.container_port, i32::from(config.broker.listen.port()));
    let probe_path = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.and_then(|p| p.http_get.as_ref())
            .map(|g| (g.path.clone(), g.port.clone()))
    };
    let http = IntOrString::String("http".into());
    assert_eq!(
        probe_path(c.readiness_probe.as_ref()),
        Some((Some("/readyz".into()), http.clone()))
    );
    assert_eq!(
        probe_path(c.liveness_probe.as_ref()),
        Some((Some("/healthz".into()), http.clone()))
    );
    // The budget keeps one pod through a drain and selects these pods.
    let pdb = m.pdb.spec.as_ref().context("pdb spec")?;
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    ensure!(
        selects(
            pdb.selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            labels
        ),
        "the budget selects the broker's pods"
    );
    // The service sends to the named port of these pods.
    let svc = m.service.spec.as_ref().context("service spec")?;
    ensure!(
        selects(svc.selector.as_ref(), labels),
        "the service selects the pods"
    );
    let sp = svc
        .ports
        .iter()
        .flatten()
        .next()
        .context("a service port")?;
    assert_eq!(sp.target_port, Some(http));
    // The network policy covers these pods both ways and lets clients reach the port.
    let np = m.policy.spec.as_ref().context("policy spec")?;
    ensure!(
        selects(
            np.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref()),
            labels
        ),
        "the policy selects the pods"
    );
    let types = np.policy_types.clone().unwrap_or_default();
    assert_eq!(types, ["Ingress", "Egress"]);
    let ingress_ports: Vec<IntOrString> = np
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten())
        .filter_map(|p| p.port.clone())
        .collect();
    ensure!(
        ingress_ports.contains(&IntOrString::Int(i32::from(config.broker.listen.port()))),
        "ingress to the broker's port: {ingress_ports:?}"
    );
    let egress_ports: Vec<IntOrString> = np
        .egress
        .iter()
        .flatten()
        .flat_map(|r| r.ports.iter().flatten())
        .filter_map(|p| p.port.clone())
        .collect();
    for needed in [53, 6379, 443] {
        ensure!(
            egress_ports.contains(&IntOrString::Int(needed)),
            "egress to port {needed}"
        );
    }
    Ok(())
}

#[test]
fn compose_runs_the_image_with_redis_and_the_example_config() -> Result<()> {
    let compose: Value = serde_yaml_ng::from_str(&read("deploy/compose.yaml")?)?;
    let (_, config) = example()?;
    let broker = &compose["services"]["broker"];
    ensure!(compose["services"]["redis"].is_mapping(), "a redis service");
    // The image built from the Containerfile's runtime stage.
    let build = &broker["build"];
    let context = super::repo()
        .join("deploy")
        .join(build["context"].as_str().context("context")?);
    let file = build["dockerfile"].as_str().context("dockerfile")?;
    ensure!(
        context.join(file).is_file(),
        "{file} is in the build context"
    );
    let target = build["target"].as_str().context("target")?;
    ensure!(
        read("deploy/container/Containerfile")?.contains(&format!(" AS {target}\n")),
        "the Containerfile has stage {target}"
    );
    // Redis reached by its service name.
    let url = broker["environment"]["JIT_REDIS_URL"]
        .as_str()
        .context("JIT_REDIS_URL")?;
    assert_eq!(url, "redis://redis:6379/0");
    // The published port is the example's listen port.
    let port = config.broker.listen.port();
    let ports: Vec<&str> = broker["ports"]
        .as_sequence()
        .context("ports")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        ports.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "port {port} published: {ports:?}"
    );
    // Read-only root: the config read-only, the keys and every folder the config writes on
    // named volumes (which take the image's ownership: its user's).
    assert_eq!(broker["read_only"].as_bool(), Some(true));
    let volumes: Vec<(String, String)> = broker["volumes"]
        .as_sequence()
        .context("volumes")?
        .iter()
        .filter_map(Value::as_str)
        .map(|v| {
            let mut parts = v.split(':');
            (
                parts.next().unwrap_or_default().to_owned(),
                parts.next().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let on_named_volume = |path: &Path| {
        volumes.iter().any(|(source, target)| {
            path.starts_with(target) && compose["volumes"][source.as_str()].is_mapping()
        })
    };
    ensure!(
        volumes
            .iter()
            .any(|(s, t)| s == "./broker.toml" && t == "/etc/git-jit/broker.toml"),
        "the config is mounted where the image reads it: {volumes:?}"
    );
    ensure!(
        on_named_volume(&config.broker.keys_dir),
        "keys on a volume: {volumes:?}"
    );
    for path in writable_paths(&config)? {
        ensure!(
            on_named_volume(&path),
            "{} on a volume: {volumes:?}",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn a_misspelt_field_in_a_manifest_is_caught() -> Result<()> {
    let doc: Value = serde_yaml_ng::from_str(
        "apiVersion: v1\nkind: Service\nmetadata: { name: x }\nspec: { selektor: { a: b } }\n",
    )?;
    match typed::<Service>(&doc) {
        Ok(_) => bail!("a misspelt field passed"),
        Err(e) => assert!(e.to_string().contains("unknown to the API"), "{e}"),
    }
    Ok(())
}
