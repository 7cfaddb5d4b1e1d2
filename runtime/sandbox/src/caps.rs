//! Capabilities: lock the securebits, empty the bounding, ambient, inheritable, permitted and
//! effective sets, set `PR_SET_NO_NEW_PRIVS` and make the process non-dumpable.

use crate::ns::describe;
use crate::sys::cvt;

// linux/securebits.h
const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;

// linux/capability.h
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Capability numbers to walk: the kernel answers EINVAL past its last one, which is how the
/// loops below stop (`/proc/sys/kernel/cap_last_cap` may already be out of reach under Landlock).
const MAX_CAP: u32 = 63;

pub(crate) fn drop_all() -> Result<String, String> {
    let mut notes = Vec::new();
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED
        | SECBIT_NO_CAP_AMBIENT_RAISE
        | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with scalar arguments.
    match cvt(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) }) {
        Ok(_) => notes.push("securebits locked".to_owned()),
        Err(e) => notes.push(format!("securebits not locked ({})", describe(&e))),
    }
    // The bounding set needs CAP_SETPCAP to shrink; without it (unprivileged, no user
    // namespace) the permitted set is empty anyway and no_new_privs stops exec from refilling it.
    let mut bounding_failed = None;
    for cap in 0..=MAX_CAP {
        // SAFETY: prctl with scalar arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            bounding_failed.get_or_insert(format!("bounding set not emptied ({})", describe(&e)));
        }
    }
    notes.extend(bounding_failed);
    // SAFETY: prctl with scalar arguments.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map_err(|e| format!("clearing the ambient set failed: {}", describe(&e)))?;
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) with a v3 header and two data words.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(format!(
            "capset to the empty set failed: {}",
            describe(&std::io::Error::last_os_error())
        ));
    }
    // SAFETY: prctl with scalar arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(|e| format!("PR_SET_NO_NEW_PRIVS failed: {}", describe(&e)))?;
    // SAFETY: prctl with scalar arguments.
    if let Err(e) = cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }) {
        notes.push(format!("still dumpable ({})", describe(&e)));
    }
    // Verify rather than trust (capget: /proc may already be out of reach under Landlock).
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut now = [CapData {
        effective: 1,
        permitted: 1,
        inheritable: 1,
    }; 2];
    // SAFETY: capget(2) with a v3 header and room for two data words.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            now.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "capget failed: {}",
            describe(&std::io::Error::last_os_error())
        ));
    }
    if now
        .iter()
        .any(|d| d.effective != 0 || d.permitted != 0 || d.inheritable != 0)
    {
        return Err("capabilities still held after capset to the empty set".to_owned());
    }
    let mut bnd = 0u32;
    for cap in 0..=MAX_CAP {
        // SAFETY: prctl with scalar arguments.
        match unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } {
            1 => bnd += 1,
            0 => {}
            _ => break,
        }
    }
    let mut detail = format!("effective, permitted, inheritable and ambient sets empty, {bnd} capabilities left in the bounding set, no_new_privs, non-dumpable");
    if !notes.is_empty() {
        detail.push_str("; ");
        detail.push_str(&notes.join("; "));
    }
    Ok(detail)
}

/// Sets `PR_SET_NO_NEW_PRIVS` alone (needed by Landlock and seccomp when the capabilities layer is off).
pub(crate) fn set_no_new_privs() -> Result<(), String> {
    // SAFETY: prctl with scalar arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map(|_| ())
        .map_err(|e| format!("PR_SET_NO_NEW_PRIVS failed: {}", describe(&e)))
}
