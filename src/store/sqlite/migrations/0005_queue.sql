-- 0005: work-queue semantics (SPEC §5a): attempts and the dead letter, delayed
-- tasks, dependencies, fencing tokens, idempotency keys. Every column is added with
-- a constant default, so an existing database upgrades in place without rewriting
-- its rows: existing tasks get attempt 0, max_attempts 3, no schedule and no
-- dependencies, which is what they had.
ALTER TABLE projects ADD COLUMN default_max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE projects ADD COLUMN retry_backoff_seconds INTEGER NOT NULL DEFAULT 10;

ALTER TABLE tasks ADD COLUMN error TEXT;
ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN not_before INTEGER;
ALTER TABLE tasks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
-- SHA-256 of the live lease's token; the token itself is only ever in the claim's answer.
ALTER TABLE tasks ADD COLUMN lease_token BLOB;
-- Failed after its last attempt (stats: dead).
ALTER TABLE tasks ADD COLUMN dead INTEGER NOT NULL DEFAULT 0;
-- Dependencies not yet completed: kept on every status change of a dependency, so
-- the claim's index holds only tasks that can run, however many wait on others.
ALTER TABLE tasks ADD COLUMN deps_waiting INTEGER NOT NULL DEFAULT 0;

-- Claim: claimable pending tasks in claim order (priority, then due time).
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks(project_id, priority DESC, coalesce(not_before, created_at), id)
  WHERE status = 'pending' AND deps_waiting = 0;
-- The lease sweeper looks for expired leases across every project.
DROP INDEX tasks_lease;
CREATE INDEX tasks_lease ON tasks(lease_expires_at) WHERE status = 'in_progress';
-- Stats: scheduled, waiting, retrying, dead.
CREATE INDEX tasks_scheduled ON tasks(project_id, not_before)
  WHERE status = 'pending' AND not_before IS NOT NULL;
CREATE INDEX tasks_waiting ON tasks(project_id) WHERE status = 'pending' AND deps_waiting > 0;
CREATE INDEX tasks_retrying ON tasks(project_id) WHERE status = 'pending' AND attempt > 0;
CREATE INDEX tasks_dead ON tasks(project_id) WHERE status = 'failed' AND dead = 1;

-- One row per dependency edge. By dependency: who waits on a task that just
-- completed, failed or was cancelled. The dependent's own list is its depends_on.
CREATE TABLE task_deps (
  dep_id     INTEGER NOT NULL,
  task_id    INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  PRIMARY KEY (dep_id, task_id)
) WITHOUT ROWID;
CREATE INDEX task_deps_task ON task_deps(task_id);

-- Stored answers of POSTs sent with an Idempotency-Key, per API key (scope 0 without
-- auth), written in the same transaction as the write they answer; kept 24 h.
CREATE TABLE idempotency_keys (
  scope       INTEGER NOT NULL,
  key         TEXT    NOT NULL,
  fingerprint BLOB    NOT NULL,
  status      INTEGER NOT NULL,
  headers     TEXT    NOT NULL,
  body        BLOB    NOT NULL,
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
