//! Memory cgroups for daemons started with `startDaemon.memoryLimit`: a directory of its own
//! under the harness's own memory cgroup, with a limit the scenario can change live, as a
//! service manager's `MemoryMax=` does. cgroup v1 (`memory.limit_in_bytes`) and v2
//! (`memory.max`, where the harness's cgroup delegates the memory controller).

use std::path::{Path, PathBuf};

/// A memory cgroup made for one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    pub dir: PathBuf,
    /// The file holding the limit: writing it changes the limit live.
    pub limit_file: PathBuf,
    /// Writing a pid here moves that process (and its future children) into the cgroup.
    pub procs_file: PathBuf,
}

/// Creates cgroup `name` with `bytes` as its memory limit, beside nothing else of ours: a
/// child of the harness's own memory cgroup.
pub fn create(name: &str, bytes: u64) -> Result<MemoryCgroup, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let mount = Path::new("/sys/fs/cgroup");
    let (parent, limit) = parent_of(&own, mount).ok_or_else(|| {
        "no memory cgroup to create a child in: neither a cgroup v1 memory hierarchy nor a \
         cgroup v2 group that delegates `memory` (its cgroup.subtree_control)"
            .to_string()
    })?;
    let dir = parent.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "cannot create memory cgroup {} (needs root and a writable cgroup mount): {e}",
                dir.display()
            ))
        }
    }
    let limit_file = dir.join(limit);
    std::fs::write(&limit_file, bytes.to_string())
        .map_err(|e| format!("cannot set {} to {bytes}: {e}", limit_file.display()))?;
    Ok(MemoryCgroup {
        procs_file: dir.join("cgroup.procs"),
        dir,
        limit_file,
    })
}

/// Removes a cgroup whose processes are gone; the kernel refuses (EBUSY) while any remains,
/// so this retries for a moment after the daemon was stopped.
pub async fn remove(dir: &Path) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!("memory cgroup {} not removed: {e}", dir.display()))
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

/// The directory to create a memory cgroup in, and its limit file's name, from
/// `/proc/self/cgroup`'s text: the v1 memory hierarchy's group when there is one, else the v2
/// group when it delegates `memory` to its children.
fn parent_of(proc_self_cgroup: &str, mount: &Path) -> Option<(PathBuf, &'static str)> {
    let groups = proc_self_cgroup.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // A group outside this cgroup namespace's root reads as `/..`: not under the mount.
        (!path.split('/').any(|p| p == "..")).then_some((controllers, path.trim_start_matches('/')))
    });
    let mut v2 = None;
    for (controllers, path) in groups {
        if controllers.split(',').any(|c| c == "memory") {
            let own = mount.join("memory").join(path);
            // In a container the hierarchy's root is the container's own group.
            let dir = if own.is_dir() {
                own
            } else {
                mount.join("memory")
            };
            if dir.is_dir() {
                return Some((dir, "memory.limit_in_bytes"));
            }
        } else if controllers.is_empty() {
            v2 = Some(mount.join(path));
        }
    }
    let dir = v2?;
    let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control")).ok()?;
    delegated
        .split_whitespace()
        .any(|c| c == "memory")
        .then_some((dir, "memory.max"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_the_own_v1_memory_group_else_a_delegating_v2_group() {
        let mount = tempfile::tempdir().unwrap();
        let m = mount.path();
        std::fs::create_dir_all(m.join("memory/process_api/abc")).unwrap();
        let hybrid = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";
        assert_eq!(
            parent_of(hybrid, m),
            Some((m.join("memory/process_api/abc"), "memory.limit_in_bytes"))
        );
        // v2 only: the group must hand `memory` to its children.
        std::fs::create_dir_all(m.join("system.slice/ci.service")).unwrap();
        let unified = "0::/system.slice/ci.service\n";
        assert_eq!(parent_of(unified, m), None);
        std::fs::write(
            m.join("system.slice/ci.service/cgroup.subtree_control"),
            "cpu memory pids\n",
        )
        .unwrap();
        assert_eq!(
            parent_of(unified, m),
            Some((m.join("system.slice/ci.service"), "memory.max"))
        );
        // A container's view: its group is the hierarchy's root.
        assert_eq!(
            parent_of("4:memory:/docker/f00\n", m),
            Some((m.join("memory"), "memory.limit_in_bytes"))
        );
        // Outside the namespace's root, or nothing readable: none.
        assert_eq!(
            parent_of("4:memory:/../other\n", Path::new("/nonexistent")),
            None
        );
        assert_eq!(parent_of("garbage", m), None);
    }
}
