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
/// `LISTEN_FDS` ≥ 1. Clears the variables so children do not inherit them. `Err` says
/// what fd 3 is instead of a listening TCP socket (a `.socket` unit with
/// `ListenDatagram=` or a path, say): adopted, it would never accept a connection
/// while the server reported ready (issue #13 item 10d).
pub fn listen_fd() -> Result<Option<TcpListener>, String> {
    use std::os::unix::io::FromRawFd;
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    let (Some(pid), Some(fds)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid != std::process::id() || fds < 1 {
        return Ok(None);
    }
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    const SD_LISTEN_FDS_START: i32 = 3;
    check_listening_tcp(SD_LISTEN_FDS_START)?;
    // SAFETY: fd 3 was handed to this process (LISTEN_PID matched) and is a listening
    // TCP socket (checked just above); nothing else in the process owns it.
    let listener = unsafe { TcpListener::from_raw_fd(SD_LISTEN_FDS_START) };
    // Set close-on-exec, as std does for sockets it opens itself.
    // SAFETY: fcntl on a valid fd with valid flags.
    unsafe {
        let flags = libc::fcntl(SD_LISTEN_FDS_START, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    Ok(Some(listener))
}

/// `Ok` when `fd` is an IPv4 or IPv6 stream socket in the listening state; otherwise
/// what it is instead, as the end of a sentence.
fn check_listening_tcp(fd: libc::c_int) -> Result<(), String> {
    let opt = |name| {
        getsockopt_int(fd, libc::SOL_SOCKET, name).map_err(|e| format!("is not a socket ({e})"))
    };
    let (domain, kind) = (opt(libc::SO_DOMAIN)?, opt(libc::SO_TYPE)?);
    let tcp_family = domain == libc::AF_INET || domain == libc::AF_INET6;
    match (tcp_family, kind == libc::SOCK_STREAM) {
        (true, true) if opt(libc::SO_ACCEPTCONN)? == 0 => {
            Err("is a TCP socket that is not listening".into())
        }
        (true, true) => Ok(()),
        (true, false) if kind == libc::SOCK_DGRAM => Err("is a UDP socket, not TCP".into()),
        (true, false) => Err(format!("is an IP socket of type {kind}, not TCP")),
        _ if domain == libc::AF_UNIX => Err("is a Unix socket, not TCP".into()),
        _ => Err(format!("is a socket of address family {domain}, not TCP")),
    }
}

/// An integer socket option of `fd`.
fn getsockopt_int(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> std::io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live, writable and `len` is `value`'s exact size;
    // an fd that is closed or not a socket makes the call fail, nothing else.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
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
/// connection costs a descriptor (`MAX_CONNECTIONS`, default 4096), so without this
/// a thousand long-poll claims alone would exhaust it.
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

/// Process figures from /proc/self.
#[derive(Debug, Default)]
pub struct Process {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub start_time: f64,
}

impl Process {
    pub fn read() -> Process {
        let page = 4096u64;
        let rss_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map(|pages| pages * page)
            .unwrap_or(0);
        // utime and stime are fields 14 and 15, in clock ticks (100 Hz on Linux).
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: f64 = f.get(11)?.parse().ok()?;
                let st: f64 = f.get(12)?.parse().ok()?;
                Some((ut + st) / 100.0)
            })
            .unwrap_or(0.0);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Process {
            rss_bytes,
            cpu_seconds,
            open_fds,
            start_time: crate::clock::start_ms() as f64 / 1000.0,
        }
    }
}
