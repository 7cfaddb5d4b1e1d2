//! Landlock: read-only access to the model directory and the few system files the C runtime
//! needs; every other filesystem access right the kernel knows is denied, TCP bind/connect are
//! denied (ABI >= 4), and abstract Unix sockets and signals are scoped to the sandbox (ABI >= 6).

use std::io;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, PathBeneath, PathFd, RestrictionStatus, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The kernel's Landlock ABI version (0 is never returned: an error says why it is missing).
pub fn kernel_abi() -> io::Result<i32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI version.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        let why = match e.raw_os_error() {
            Some(libc::ENOSYS) => "not built into this kernel (ENOSYS)".to_owned(),
            Some(libc::EOPNOTSUPP) => {
                "built in but not enabled at boot: add landlock to lsm= (EOPNOTSUPP)".to_owned()
            }
            _ => crate::ns::describe(&e),
        };
        return Err(io::Error::new(e.kind(), why));
    }
    Ok(rc as i32)
}

pub(crate) fn apply(model_dir: &Path, extra: &[PathBuf]) -> Result<String, String> {
    let version = kernel_abi().map_err(|e| format!("landlock {e}"))?;
    let abi = ABI::from(version);
    let read_dir: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let read_file: BitFlags<AccessFs> = AccessFs::ReadFile.into();

    let model_fd = PathFd::new(model_dir)
        .map_err(|e| format!("opening model_dir {} failed: {e}", model_dir.display()))?;
    let mut rules = vec![PathBeneath::new(model_fd, read_dir)];
    let mut granted = vec![model_dir.display().to_string()];
    for p in extra {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let Ok(fd) = PathFd::new(p) else { continue };
        rules.push(PathBeneath::new(
            fd,
            if meta.is_dir() { read_dir } else { read_file },
        ));
        granted.push(p.display().to_string());
    }

    let status: RestrictionStatus = (|| -> Result<RestrictionStatus, landlock::RulesetError> {
        let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(abi))?;
        if !AccessNet::from_all(abi).is_empty() {
            ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
        }
        if !Scope::from_all(abi).is_empty() {
            ruleset = ruleset.scope(Scope::from_all(abi))?;
        }
        ruleset
            .create()?
            .add_rules(rules.into_iter().map(Ok::<_, landlock::RulesetError>))?
            .restrict_self()
    })()
    .map_err(|e| format!("landlock ruleset failed: {e}"))?;

    let net = if AccessNet::from_all(abi).is_empty() {
        ""
    } else {
        ", TCP bind/connect denied"
    };
    let scope = if Scope::from_all(abi).is_empty() {
        ""
    } else {
        ", abstract unix sockets and signals scoped"
    };
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(format!(
            "ABI {version}, fully enforced; read-only: {}{net}{scope}",
            granted.join(", ")
        )),
        RulesetStatus::PartiallyEnforced => Ok(format!(
            "ABI {version}, partially enforced; read-only: {}{net}{scope}",
            granted.join(", ")
        )),
        RulesetStatus::NotEnforced => Err(format!(
            "landlock ruleset not enforced by the kernel (ABI {version})"
        )),
    }
}
