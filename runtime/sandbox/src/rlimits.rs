//! Resource limits: address space (E3003 source), open files, no core dumps.

use crate::ns::describe;
use crate::sys::cvt;

fn set(resource: libc::__rlimit_resource_t, value: u64, name: &str) -> Result<(), String> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit struct.
    cvt(unsafe { libc::getrlimit(resource, &mut cur) })
        .map_err(|e| format!("getrlimit({name}) failed: {}", describe(&e)))?;
    // Only ever lower: raising a hard limit needs CAP_SYS_RESOURCE, which the VM may not have.
    let v = value.min(cur.rlim_max);
    let lim = libc::rlimit {
        rlim_cur: v,
        rlim_max: v,
    };
    // SAFETY: valid pointer to an rlimit struct.
    cvt(unsafe { libc::setrlimit(resource, &lim) })
        .map_err(|e| format!("setrlimit({name}, {v}) failed: {}", describe(&e)))?;
    Ok(())
}

pub(crate) fn apply(
    memory_limit_bytes: Option<u64>,
    max_open_files: u64,
) -> Result<String, String> {
    let mut detail = Vec::new();
    if let Some(bytes) = memory_limit_bytes {
        set(libc::RLIMIT_AS, bytes, "RLIMIT_AS")?;
        detail.push(format!("RLIMIT_AS={bytes}"));
    }
    set(libc::RLIMIT_NOFILE, max_open_files, "RLIMIT_NOFILE")?;
    detail.push(format!("RLIMIT_NOFILE={max_open_files}"));
    set(libc::RLIMIT_CORE, 0, "RLIMIT_CORE")?;
    detail.push("RLIMIT_CORE=0".to_owned());
    Ok(detail.join(", "))
}
