//! The kind driver's cluster lifecycle, through the kind CLI and the offline build in
//! `ci/kind/` (kind has no maintained Rust crate; this module is the one place that drives it).
//!
//! - A named cluster per run (`veritas-<pid>` unless given), guarded by an exclusive lock so
//!   two runs on one machine never share or delete each other's cluster.
//! - `ci/kind/up.sh` builds the offline node and component images only when missing (cached,
//!   keyed by their recipe) and reuses a cluster only when its node image is the wanted one.
//! - On failure, `kind export logs` goes into the report directory before deletion.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("cluster {name} is in use by another run (lock {lock})")]
    Locked { name: String, lock: PathBuf },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A kind cluster this run holds.
pub struct KindCluster {
    pub name: String,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    kind: PathBuf,
    _lock: File,
    /// Delete on release (a cluster this run created).
    pub owned: bool,
}

fn kind_dir(repo: &Path) -> PathBuf {
    repo.join("ci/kind")
}

/// Reads `KEY=value` pins from `ci/kind/versions.env`.
fn pin(repo: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(kind_dir(repo).join("versions.env")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn cache_dir() -> PathBuf {
    std::env::var_os("VERITAS_KIND_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/veritas-kind"))
}

fn lock(name: &str) -> Result<File, KindError> {
    let dir = cache_dir().join("locks");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.lock"));
    let f = File::create(&path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; the lock lives as long as the File.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(KindError::Locked {
            name: name.into(),
            lock: path,
        });
    }
    Ok(f)
}

impl KindCluster {
    /// Brings up (or reuses) cluster `name` with everything the catalog needs: the offline
    /// images, Prometheus and its Operator, the Veritas images, CRDs and controller.
    /// `bins`: where this run's `veritas-spark` lives; when `veritas-controller` and
    /// `veritas-fixtures` are built beside it, the images are made from those binaries (no
    /// second, release build of llama.cpp).
    pub fn up(
        repo: &Path,
        name: &str,
        bins: Option<&Path>,
        progress: &dyn Fn(&str),
    ) -> Result<KindCluster, KindError> {
        let guard = lock(name)?;
        let kubeconfig = cache_dir().join(format!("kubeconfig-{name}"));
        let k8s = pin(repo, "K8S_VERSION").unwrap_or_default();
        let kind_version = pin(repo, "KIND_VERSION").unwrap_or_default();
        let bin = cache_dir().join("bin");
        let kind = bin.join(format!("kind-{kind_version}"));
        // A cluster that was there before this run (`--cluster-name` of someone's cluster) is
        // reused and left in place: only a cluster this run created is deleted at the end.
        let existed = Command::new(&kind)
            .args(["get", "clusters"])
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l == name)
            });
        progress(&format!(
            "kind cluster {name}: build (cached) and create via ci/kind/up.sh"
        ));
        let out = Command::new("bash")
            .arg(kind_dir(repo).join("up.sh"))
            .env("CLUSTER_NAME", name)
            .env("KUBECONFIG_OUT", &kubeconfig)
            .output()?;
        if !out.status.success() {
            return Err(KindError::Command {
                what: "ci/kind/up.sh".into(),
                detail: tail(&out.stderr, 25),
            });
        }
        let cluster = KindCluster {
            name: name.into(),
            kubeconfig,
            kubectl: bin.join(format!("kubectl-{k8s}")),
            kind,
            _lock: guard,
            owned: !existed,
        };
        let veritas = kind_dir(repo).join("install-veritas.sh");
        if veritas.exists() {
            let mut cmd = Command::new("bash");
            cmd.arg(&veritas)
                .env("CLUSTER_NAME", name)
                .env("KUBECONFIG", &cluster.kubeconfig);
            let built = bins.filter(|d| {
                ["veritas-spark", "veritas-controller", "veritas-fixtures"]
                    .iter()
                    .all(|b| d.join(b).is_file())
            });
            match built {
                Some(d) => {
                    progress(&format!(
                        "installing the Veritas images (binaries from {}), CRDs and controller",
                        d.display()
                    ));
                    cmd.env("VERITAS_BIN_DIR", d);
                }
                None => progress(
                    "installing the Veritas images (release build of veritas-spark, veritas-controller, veritas-fixtures), CRDs and controller",
                ),
            }
            let out = cmd.output()?;
            if !out.status.success() {
                return Err(KindError::Command {
                    what: "ci/kind/install-veritas.sh".into(),
                    detail: tail(&out.stderr, 25),
                });
            }
        }
        Ok(cluster)
    }

    /// `kind export logs` into `dir` (before a failed cluster is deleted).
    pub fn export_logs(&self, dir: &Path) -> Result<(), KindError> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new(&self.kind)
            .args(["export", "logs", "--name", &self.name])
            .arg(dir)
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(KindError::Command {
                what: "kind export logs".into(),
                detail: tail(&out.stderr, 10),
            })
        }
    }

    /// Deletes the cluster if this run created it.
    pub fn release(self) -> Result<(), KindError> {
        if !self.owned {
            return Ok(());
        }
        let out = Command::new(&self.kind)
            .args(["delete", "cluster", "--name", &self.name])
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(KindError::Command {
                what: "kind delete cluster".into(),
                detail: tail(&out.stderr, 10),
            })
        }
    }
}

fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_of_the_same_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("VERITAS_KIND_CACHE", dir.path());
        let first = lock("t-lock").unwrap();
        match lock("t-lock") {
            Err(KindError::Locked { name, .. }) => assert_eq!(name, "t-lock"),
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        drop(first);
        assert!(lock("t-lock").is_ok(), "released with the first holder");
    }
}
