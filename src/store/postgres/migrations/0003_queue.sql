-- 0003: work-queue semantics (SPEC §5a), as SQLite's 0005: attempts and the dead
-- letter, delayed tasks, dependencies, fencing tokens, idempotency keys. Columns
-- with constant defaults (PostgreSQL 11+ adds them without rewriting the table).
ALTER TABLE projects ADD COLUMN default_max_attempts BIGINT NOT NULL DEFAULT 3;
ALTER TABLE projects ADD COLUMN retry_backoff_seconds BIGINT NOT NULL DEFAULT 10;

ALTER TABLE tasks ADD COLUMN error TEXT;
ALTER TABLE tasks ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN max_attempts BIGINT NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN not_before BIGINT;
ALTER TABLE tasks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
-- SHA-256 of the live lease's token; the token itself is only in the claim's answer.
ALTER TABLE tasks ADD COLUMN lease_token BYTEA;
ALTER TABLE tasks ADD COLUMN dead BOOLEAN NOT NULL DEFAULT false;
-- Dependencies not yet completed, kept on every status change of a dependency, so
-- the claim's index holds only tasks that can run, however many wait on others.
ALTER TABLE tasks ADD COLUMN deps_waiting BIGINT NOT NULL DEFAULT 0;

-- Claim: claimable pending tasks in claim order (priority, then due time), for
-- `… FOR UPDATE SKIP LOCKED`.
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks(project_id, priority DESC, (coalesce(not_before, created_at)), id)
  WHERE status = 'pending' AND deps_waiting = 0;
-- The lease sweeper looks for expired leases across every project.
CREATE INDEX tasks_lease ON tasks(lease_expires_at) WHERE status = 'in_progress';
-- Stats: scheduled, waiting, retrying, dead.
CREATE INDEX tasks_scheduled ON tasks(project_id, not_before)
  WHERE status = 'pending' AND not_before IS NOT NULL;
CREATE INDEX tasks_waiting ON tasks(project_id) WHERE status = 'pending' AND deps_waiting > 0;
CREATE INDEX tasks_retrying ON tasks(project_id) WHERE status = 'pending' AND attempt > 0;
CREATE INDEX tasks_dead ON tasks(project_id) WHERE status = 'failed' AND dead;

CREATE TABLE task_deps (
  dep_id  BIGINT NOT NULL,
  task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  PRIMARY KEY (dep_id, task_id)
);
CREATE INDEX task_deps_task ON task_deps(task_id);

CREATE TABLE idempotency_keys (
  scope       BIGINT NOT NULL,
  key         TEXT   NOT NULL,
  fingerprint BYTEA  NOT NULL,
  status      INT    NOT NULL,
  headers     TEXT   NOT NULL,
  body        BYTEA  NOT NULL,
  created_at  BIGINT NOT NULL,
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
