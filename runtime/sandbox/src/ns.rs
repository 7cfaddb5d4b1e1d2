//! User, mount and network namespaces.
//!
//! `unshare(2)` of a user namespace requires a single-threaded caller, so these run first.
//! The user namespace is created alone (so a profile that denies only `CLONE_NEWUSER`, as
//! container runtimes' default seccomp profiles do, costs only this layer); the mount and
//! network namespaces are then created inside it, where the process holds `CAP_SYS_ADMIN`,
//! or, without a user namespace, with whatever capabilities the process has (root: yes).

use std::fs;
use std::io;

use crate::sys::cvt;

/// Creates a user namespace and maps the caller's uid and gid to themselves (one-id maps,
/// `setgroups` denied), which is what an unprivileged process may write. Inside, the process
/// holds a full capability set until the capabilities layer drops it.
pub(crate) fn enter_user_namespace() -> Result<String, String> {
    // SAFETY: plain syscalls with scalar arguments.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: unshare with a constant flag.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWUSER) })
        .map_err(|e| format!("unshare(CLONE_NEWUSER) failed: {}", describe(&e)))?;
    let write = |path: &str, contents: String| {
        fs::write(path, contents.as_bytes()).map_err(|e| format!("writing {path} failed: {e}"))
    };
    write("/proc/self/setgroups", "deny".to_owned())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    // Forbid nested user namespaces even before seccomp is in force: the per-namespace limit
    // is writable by the namespace's owner. Best effort: /proc/sys may be read-only.
    let nested = match fs::write("/proc/sys/user/max_user_namespaces", b"0\n") {
        Ok(()) => "nested user namespaces limited to 0",
        Err(_) => "nested-namespace limit not writable",
    };
    Ok(format!(
        "uid {uid} and gid {gid} mapped to themselves, setgroups denied, {nested}"
    ))
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Creates a private mount namespace and makes the whole tree read-only, nosuid and nodev.
/// Landlock decides what is readable; this layer makes sure nothing is writable and that no
/// mount event propagates back to the host.
pub(crate) fn enter_mount_namespace() -> Result<String, String> {
    // SAFETY: unshare with a constant flag.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) })
        .map_err(|e| format!("unshare(CLONE_NEWNS) failed: {}", describe(&e)))?;
    let root = c"/";
    // SAFETY: valid NUL-terminated strings and null pointers where the kernel accepts them.
    cvt(unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
    .map_err(|e| format!("making / a private mount failed: {}", describe(&e)))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) with a valid path, flags and attribute struct of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            root.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok("private mount namespace; every mount read-only, nosuid, nodev".to_owned());
    }
    let e = io::Error::last_os_error();
    // Kernels before 5.12 lack mount_setattr: remount the root alone read-only.
    // SAFETY: as above.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(format!(
            "private mount namespace; / read-only (recursive mount_setattr failed: {})",
            describe(&e)
        ))
    } else {
        Err(format!(
            "making the mount tree read-only failed: mount_setattr: {}; remount: {}",
            describe(&e),
            describe(&io::Error::last_os_error())
        ))
    }
}

/// Creates an empty network namespace: only `lo`, which stays down, so no address (not even
/// 127.0.0.1) is reachable.
pub(crate) fn enter_network_namespace() -> Result<String, String> {
    // SAFETY: unshare with a constant flag.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })
        .map_err(|e| format!("unshare(CLONE_NEWNET) failed: {}", describe(&e)))?;
    let ifaces: Vec<String> = fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect();
    Ok(format!(
        "new network namespace, interfaces: {} (down)",
        ifaces.join(",")
    ))
}

pub(crate) fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => crate::sys::errno_text(n),
        None => e.to_string(),
    }
}
