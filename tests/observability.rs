//! The real neighbours: promtool reads our metrics, HAProxy health-checks us and
//! drains us on SIGTERM without failing a request.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{free_port, have_tool, raw, signal, temp_dir, TestServer};

#[test]
fn promtool_accepts_our_metrics() {
    if !have_tool("promtool") {
        return;
    }
    let s = TestServer::start();
    let pid = s.project("p");
    s.post(
        &format!("/projects/{pid}/tasks"),
        &serde_json::json!({"title": "x"}),
    );
    s.get("/nope");
    s.call("PUT", "/tasks/1", None);
    let text = s.send("GET", "/metrics", &[], None).body;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&text)
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The JSON view carries the same counters.
    let j = s.send("GET", "/metrics/json", &[], None).json();
    let line = String::from_utf8_lossy(&text)
        .lines()
        .find(|l| l.starts_with("tasks_created_total{"))
        .map(String::from)
        .expect("counter");
    assert!(line.ends_with(&format!(" {}", j["metrics"]["tasks_created_total"])));
}

/// Status of server `name` in backend `be` from HAProxy's CSV stats page.
fn haproxy_state(front: u16, name: &str) -> String {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", front)) else {
        return String::new(); // not listening yet
    };
    let mut buf = String::new();
    let _ = c.write_all(b"GET /haproxy-stats;csv HTTP/1.0\r\n\r\n");
    let _ = c.read_to_string(&mut buf);
    buf.lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 17 && f[0] == "be" && f[1] == name)
        .map(|f| f[17].to_string())
        .unwrap_or_default()
}

fn wait_state(front: u16, name: &str, want: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    while !haproxy_state(front, name).starts_with(want) {
        assert!(t0.elapsed() < limit, "{name} not {want} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn haproxy_marks_us_down_on_sigterm_before_the_listener_closes() {
    if !have_tool("haproxy") {
        return;
    }
    let env = [("AUTH_DISABLED", "true"), ("SHUTDOWN_DRAIN_SECONDS", "3")];
    let app1 = TestServer::start_with(&env);
    let app2 = TestServer::start_with(&env);
    let dir = temp_dir("haproxy");
    let front = free_port();
    let cfg = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 127.0.0.1:{front}\n  stats enable\n  stats uri /haproxy-stats\n  default_backend be\n\
         backend be\n  balance roundrobin\n  option httpchk GET /health/ready\n  http-check expect status 200\n\
         \x20 default-server inter 300ms fall 2 rise 1\n\
         \x20 server app1 {} check\n  server app2 {} check\n",
        app1.addr, app2.addr
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("cfg");
    let check = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut hap = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy");
    wait_state(front, "app1", "UP", Duration::from_secs(10));
    wait_state(front, "app2", "UP", Duration::from_secs(10));

    // A steady request loop through HAProxy for the whole shutdown of app1.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(Mutex::new(Vec::<u16>::new()));
    let looper = {
        let (stop, results) = (stop.clone(), results.clone());
        std::thread::spawn(move || {
            let addr = format!("127.0.0.1:{front}").parse().expect("addr");
            while !stop.load(Ordering::Relaxed) {
                let r = raw(
                    addr,
                    b"GET /projects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                );
                results.lock().expect("results").push(r.status);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    signal(app1.pid(), "TERM");
    let down_after = wait_state(front, "app1", "DOWN", Duration::from_secs(3));
    assert!(
        down_after < Duration::from_millis(2500),
        "DOWN within the fall count, before the drain ends"
    );
    let status = app1.wait_exit(Duration::from_secs(20));
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    looper.join().expect("loop");
    let _ = hap.kill();
    let _ = hap.wait();
    let results = results.lock().expect("results");
    let failed: Vec<_> = results.iter().filter(|s| **s != 200).collect();
    assert!(
        results.len() > 100,
        "the loop ran ({} requests)",
        results.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        results.len()
    );
    drop(app2);
}
