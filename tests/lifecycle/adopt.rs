//! The socket systemd passes (`LISTEN_FDS`, fd 3) is adopted only when it is a
//! listening TCP socket (issue #13 item 10d, SPEC §6): anything else is a
//! misconfigured `.socket` unit, and the server must say so and exit 78 instead of
//! reporting ready on a socket it can never accept a connection from.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{raw, signal, temp_dir, BIN};

/// Starts the binary the way systemd does: `sock` on fd 3, `LISTEN_FDS=1` and
/// `LISTEN_PID` set to the binary's own pid (the shell's, which `exec` keeps).
fn spawn_with_fd3(sock: RawFd, dir: &std::path::Path) -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0""#, BIN])
        .env_clear()
        .envs(crate::harness::db_env(&dir.join("d.db")))
        .env("PORT", "1") // binding it would fail: only the passed socket can serve
        .env("SHUTDOWN_DRAIN_SECONDS", "0")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe and touch only the forked child.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if sock == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) // dup2(3, 3) would keep FD_CLOEXEC
            } else {
                libc::dup2(sock, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn")
}

/// Waits (bounded) for the child to exit by itself; kills it if it does not.
fn exit_of(mut child: Child, limit: Duration) -> Option<Output> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_passed_socket_that_is_not_listening_tcp_is_refused_with_exit_78() {
    let dir = temp_dir("adopt");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let unix = std::os::unix::net::UnixListener::bind(dir.join("s.sock")).expect("unix");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let connected = std::net::TcpStream::connect(tcp.local_addr().expect("addr")).expect("connect");
    let cases: [(&str, RawFd); 3] = [
        ("a UDP socket", udp.as_raw_fd()),
        ("a Unix stream socket", unix.as_raw_fd()),
        ("a TCP socket that is not listening", connected.as_raw_fd()),
    ];
    for (what, fd) in cases {
        let out = exit_of(spawn_with_fd3(fd, &dir), Duration::from_secs(15))
            .unwrap_or_else(|| panic!("given {what} on fd 3, the server kept running"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {err}");
        let sentence = err
            .lines()
            .find(|l| l.starts_with("dashboard-backend: "))
            .unwrap_or_else(|| panic!("{what}: no error sentence in {err}"));
        assert!(sentence.contains("LISTEN_FDS"), "{what}: {sentence}");
    }
}

#[test]
fn a_passed_listening_tcp_socket_is_adopted() {
    let dir = temp_dir("adopt-ok");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let addr = tcp.local_addr().expect("addr");
    let child = spawn_with_fd3(tcp.as_raw_fd(), &dir);
    drop(tcp); // the child's copy on fd 3 is the only listener left
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // The kernel queues connections on the passed socket before the server runs.
        let r = raw(addr, b"GET /health/live HTTP/1.0\r\n\r\n");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never served: {}", r.status);
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(child.id(), "TERM");
    let out = exit_of(child, Duration::from_secs(15)).expect("server did not stop on SIGTERM");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
