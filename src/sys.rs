//! The two places this program talks to the OS below std: free disk space
//! (`statvfs`) and adopting a listening socket that systemd passed (`LISTEN_FDS`).
//! Both are `unsafe` FFI/fd calls; they live here, each with its SAFETY note.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Bytes available to unprivileged users on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs struct
    // that outlives the call.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// The listening socket systemd passed (fd 3), when `LISTEN_PID` is us and
/// `LISTEN_FDS` ≥ 1. Clears the variables so children do not inherit them.
pub fn listen_fd() -> Option<TcpListener> {
    use std::os::unix::io::FromRawFd;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    const SD_LISTEN_FDS_START: i32 = 3;
    // SAFETY: systemd's protocol guarantees fd 3 is an open listening socket handed
    // to this process (LISTEN_PID matched); nothing else in the process owns it.
    let listener = unsafe { TcpListener::from_raw_fd(SD_LISTEN_FDS_START) };
    // Set close-on-exec, as std does for sockets it opens itself.
    // SAFETY: fcntl on a valid fd with valid flags.
    unsafe {
        let flags = libc::fcntl(SD_LISTEN_FDS_START, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    Some(listener)
}

/// Sets TCP_NODELAY on the listening socket; Linux copies it to every accepted
/// connection. Without it a response written in two pieces (tiny_http writes head
/// and body separately) waits for the client's delayed ACK: 40 ms per large reply.
pub fn set_nodelay(listener: &TcpListener) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd, a pointer to a c_int that lives across the call and
    // its exact size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
