//! The places this program talks to the OS below std: free disk space (`statvfs`),
//! adopting a listening socket that systemd passed (`LISTEN_FDS`), and the advisory
//! `flock(2)` behind the server lock. All are `unsafe` FFI/fd calls; they live here,
//! each with its SAFETY note.
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

/// Socket options for the listening socket, which Linux copies to every accepted
/// connection (tiny_http exposes no per-connection hook):
/// - TCP_NODELAY: tiny_http writes the head and the body of a response separately;
///   with Nagle on, the body waits for the client's delayed ACK (40 ms a reply);
/// - a listen backlog of 4096 instead of std's 128, so a burst of connections
///   (hundreds of agents reconnecting at once) does not wait a SYN retry (1 s).
///
/// Not here, on purpose: SO_RCVTIMEO. Set on the listener it would also bound
/// `accept()`, and tiny_http's accept thread stops for good on the first accept
/// error (EAGAIN after an idle spell) — the server would go deaf.
pub fn tune_listener(listener: &TcpListener) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let one: libc::c_int = 1;
    setsockopt(listener, libc::IPPROTO_TCP, libc::TCP_NODELAY, &one)?;
    // Listening again on a listening socket raises the backlog (capped by somaxconn).
    // SAFETY: listen(2) on a valid, already listening socket fd.
    if unsafe { libc::listen(listener.as_raw_fd(), 4096) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn setsockopt<T>(
    listener: &TcpListener,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid socket fd, and a pointer to a live `T` with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How `flock` should lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Shared,
    Exclusive,
}

/// Tries to take an advisory `flock(2)` lock on `file` without waiting: `Ok(false)`
/// when another open file description holds a conflicting lock. The lock goes with
/// the file description: closing `file` (or the process exiting) releases it.
pub fn try_flock(file: &std::fs::File, lock: Lock) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    let op = match lock {
        Lock::Shared => libc::LOCK_SH,
        Lock::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    // SAFETY: flock on a valid open fd owned by `file`, which outlives the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Caps glibc's malloc arenas at 2. glibc gives busy threads arenas of their own (up
/// to 8 per core); with ~70 threads (workers, write threads, tiny_http's connection
/// threads) that fragments memory and lifts RSS by tens of MiB for no speed gain
/// here, where the threads mostly wait. musl builds have no arenas to cap.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called once at start-up, before the threads that allocate
    // concurrently exist; M_ARENA_MAX with a small positive value is always valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Raises the soft limit on open files to the hard limit and returns the new soft
/// limit. systemd starts services with a soft limit of 1024, and every client
/// connection costs two descriptors (tiny_http keeps a read and a write handle), so
/// without this a few hundred idle clients would exhaust it.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max.min(1 << 20),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            lim.rlim_cur = wanted.rlim_cur;
        }
    }
    Ok(lim.rlim_cur)
}
