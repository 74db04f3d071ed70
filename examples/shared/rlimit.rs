//! Shared by the load examples (`hold_conns`, `room_flood`), each of which includes it with
//! `#[path = "shared/rlimit.rs"] mod rlimit;`.

use std::io;

/// Raise this process's soft limit on descriptors (RLIMIT_NOFILE) to `needed`, as far as the
/// hard limit allows (getrlimit(2)): each connection is a descriptor, and the usual soft
/// limit of 1024 is far below what these clients hold.
pub fn raise_descriptor_limit(needed: usize) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(format!("getrlimit: {}", io::Error::last_os_error()));
        }
        if limit.rlim_cur as usize >= needed {
            return Ok(());
        }
        limit.rlim_cur = limit.rlim_max.min(needed as libc::rlim_t);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(format!("setrlimit: {}", io::Error::last_os_error()));
        }
    }
    if (limit.rlim_cur as usize) < needed {
        return Err(format!(
            "need {needed} descriptors, the hard limit is {}",
            limit.rlim_max
        ));
    }
    Ok(())
}
