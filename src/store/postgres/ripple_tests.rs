//! Ripples through dependents against concurrent writers (issue #15; found by an
//! attack on the lock order): a raw session stands in for a creation that holds a
//! dependency `FOR SHARE` (as `dependency_state` does) at the worst moment.

use std::time::Duration;

use super::connect::Connector;
use super::count_tests::new_task;
use super::tests::{ran, Cluster};
use super::PgStore;
use crate::model::*;
use crate::store::{ProjectStore, TaskStore};

fn task(title: &str, depends_on: Vec<i64>) -> NewTask {
    NewTask {
        title: title.into(),
        depends_on,
        ..new_task(TaskStatus::Pending)
    }
}

fn setup(c: &Cluster, name: &str) -> (PgStore, postgres::Client, i64) {
    let url = c.database(name);
    let store = PgStore::open(&url, 4).expect("open");
    let raw = Connector::new(&url)
        .expect("connector")
        .connect()
        .expect("raw");
    let p = ran(store.create_project(
        NewProject {
            name: name.into(),
            description: String::new(),
            status: ProjectStatus::Active,
            default_max_attempts: 3,
            retry_backoff_seconds: 10,
        },
        None,
        None,
    ));
    (store, raw, p.id)
}

fn claim_one(store: &PgStore, pid: i64) -> Task {
    let claim = Claim {
        agent: "a".into(),
        lease_seconds: 60,
        labels: vec![],
        limit: 1,
    };
    ran(store.claim(pid, claim, None)).pop().expect("a task")
}

/// A fails for good while a creation of X (depending on B, which depends on A)
/// holds B and has not committed: the block waits for B, and X, committed during
/// that wait, is blocked too. (One recursive statement from its own snapshot never
/// saw X, which then waited for good on a blocked B.)
#[test]
fn a_dependent_created_while_the_block_waits_is_blocked_too() {
    let Some(c) = Cluster::start() else { return };
    let (store, mut raw, pid) = setup(&c, "lostblock");
    let a = ran(store.create_tasks(pid, vec![task("A", vec![])], None, None)).remove(0);
    let b = ran(store.create_tasks(pid, vec![task("B", vec![a.id])], None, None)).remove(0);
    let held = claim_one(&store, pid);
    assert_eq!(held.id, a.id);
    // The creation: B locked as dependency_state locks it, X and its edge written.
    let mut tx = raw.transaction().expect("begin");
    tx.query("SELECT id FROM tasks WHERE id = $1 FOR SHARE", &[&b.id])
        .expect("lock B");
    let x: i64 = tx
        .query_one(
            "INSERT INTO tasks (project_id, title, status, depends_on, deps_waiting,
                                created_at, updated_at)
             VALUES ($1, 'X', 'pending', $2, 1, 1, 1) RETURNING id",
            &[&pid, &format!("[{}]", b.id)],
        )
        .expect("insert X")
        .get(0);
    tx.execute(
        "INSERT INTO task_deps (dep_id, task_id) VALUES ($1, $2)",
        &[&b.id, &x],
    )
    .expect("edge");
    let failing = std::thread::scope(|s| {
        let h = s.spawn(|| {
            store.fail(
                a.id,
                None,
                Failure {
                    token: held.lease_token.clone().expect("token"),
                    error: None,
                    retry: false,
                },
                None,
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        tx.commit().expect("commit X");
        h.join().expect("fail")
    });
    assert_eq!(ran(failing).status, TaskStatus::Failed);
    for (id, name) in [(b.id, "B"), (x, "X")] {
        let t = store.get_task(id, None).expect("get");
        assert_eq!(t.status, TaskStatus::Blocked, "{name}: {t:?}");
    }
}

/// The lock order of ripples and creations cannot be kept when a dependency was
/// re-wired to a task with a higher id: complete(A) holds A and waits for T, a
/// creation holds T and waits for A. PostgreSQL aborts one of them; when it is the
/// completion, `run` repeats it and the agent's complete succeeds (it answered 503,
/// and the completion was lost unless the agent retried within its lease).
#[test]
fn a_completion_caught_in_a_deadlock_is_repeated_not_refused() {
    let Some(c) = Cluster::start() else { return };
    let (store, mut raw, pid) = setup(&c, "deadlock");
    let t = ran(store.create_tasks(pid, vec![task("T", vec![])], None, None)).remove(0);
    let a = ran(store.create_tasks(pid, vec![task("A", vec![])], None, None)).remove(0);
    let rewire = TaskPatch {
        depends_on: Some(vec![a.id]),
        ..TaskPatch::default()
    };
    store
        .update_task(t.id, None, rewire, None, None, None)
        .expect("T depends on A");
    let held = claim_one(&store, pid);
    assert_eq!(held.id, a.id, "T waits for A");
    let mut tx = raw.transaction().expect("begin");
    tx.query("SELECT id FROM tasks WHERE id = $1 FOR SHARE", &[&t.id])
        .expect("lock T");
    let done = std::thread::scope(|s| {
        let h = s.spawn(|| {
            store.complete(
                a.id,
                None,
                held.lease_token.clone().expect("token"),
                None,
                None,
            )
        });
        // The completion holds A and waits for T; now the creation waits for A. The
        // first to wait (the completion) finds the cycle after deadlock_timeout (1 s)
        // and is aborted; the creation then gets A, and commits.
        std::thread::sleep(Duration::from_millis(500));
        let second = tx.query("SELECT id FROM tasks WHERE id = $1 FOR SHARE", &[&a.id]);
        match second {
            Ok(_) => tx.commit().expect("commit"),
            Err(e) => eprintln!("the stand-in creation was the victim instead: {e}"),
        }
        h.join().expect("complete")
    });
    let done = match done {
        Ok(o) => ran(Ok(o)),
        Err(e) => panic!("the completion was refused: {e}"),
    };
    assert_eq!(done.status, TaskStatus::Completed);
    let t = store.get_task(t.id, None).expect("get T");
    assert_eq!(
        (t.status, t.deps_waiting),
        (TaskStatus::Pending, 0),
        "{t:?}"
    );
}

/// T depends on S and both run (S was re-armed by an operator after T started). T's
/// attempt ends with a retry while S fails for good: T's re-arm reads S without a
/// lock (T holds its own row) and sees it running, so T goes back to pending, and
/// S's block must still reach T once that commits. (The walk took only dependents
/// pending in its snapshot, saw T running, and left it pending for good on a
/// failed S.)
#[test]
fn a_dependent_re_armed_beside_its_dependencys_failure_is_blocked() {
    let Some(c) = Cluster::start() else { return };
    let (store, mut raw, pid) = setup(&c, "rearmrace");
    let s_task = ran(store.create_tasks(pid, vec![task("S", vec![])], None, None)).remove(0);
    let t_task =
        ran(store.create_tasks(pid, vec![task("T", vec![s_task.id])], None, None)).remove(0);
    let s1 = claim_one(&store, pid);
    assert_eq!(s1.id, s_task.id);
    ran(store.complete(
        s1.id,
        None,
        s1.lease_token.clone().expect("token"),
        None,
        None,
    ));
    let t1 = claim_one(&store, pid);
    assert_eq!(t1.id, t_task.id);
    let again = TaskPatch {
        status: Some(TaskStatus::Pending),
        ..TaskPatch::default()
    };
    store
        .update_task(s_task.id, None, again, None, None, None)
        .expect("S re-armed");
    let s2 = claim_one(&store, pid);
    assert_eq!(s2.id, s_task.id);
    // T's attempt ending, caught before its commit: re-armed from S seen running.
    let mut tx = raw.transaction().expect("begin");
    tx.execute(
        "UPDATE tasks SET status = 'pending', deps_waiting = 1, assignee = NULL,
                          lease_expires_at = NULL, lease_token = NULL
         WHERE id = $1",
        &[&t_task.id],
    )
    .expect("T re-armed");
    let failing = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            store.fail(
                s2.id,
                None,
                Failure {
                    token: s2.lease_token.clone().expect("token"),
                    error: None,
                    retry: false,
                },
                None,
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        tx.commit().expect("commit T");
        h.join().expect("fail S")
    });
    assert_eq!(ran(failing).status, TaskStatus::Failed);
    let t = store.get_task(t_task.id, None).expect("get T");
    assert_eq!(
        t.status,
        TaskStatus::Blocked,
        "T waits on a failed S: {t:?}"
    );
}
