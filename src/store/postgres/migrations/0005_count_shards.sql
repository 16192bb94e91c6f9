-- 0005: the count rows of 0002 spread over 16 shards (issue #17).
--
-- Every change of a task's status updates its project's count rows and holds them to
-- the end of its commit, so every claim and every completion of a project waited
-- for the commit of the one before (bench-queue --postgres: claims queued on
-- Lock:transactionid inside the claim statement). Now each connection moves the
-- counts in its own shard, `pg_backend_pid() % 16`; a shard's row may go negative,
-- and readers sum the shards of a (project, status) or (project, bucket).
--
-- Increments and the decrements of a status change upsert the caller's shard, as
-- 0002 upserted its one row. Deletes still only decrement rows that exist (a
-- project's cascade runs after task_counts_project_delete removed its rows and must
-- not bring them back): the caller's shard if it has that row, or else the lowest
-- shard that has it. Deletes are rare and batched; the hot paths are claims and
-- completions. Lock order stays as in 0002 (task rows, then count rows in key order,
-- then the project's event lock); within a statement the shard is one value.

LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE task_counts, task_completions IN ACCESS EXCLUSIVE MODE;

-- PARALLEL RESTRICTED as pg_backend_pid(): a parallel worker has a pid of its own.
CREATE FUNCTION count_shard() RETURNS smallint LANGUAGE sql STABLE PARALLEL RESTRICTED
  AS $$ SELECT (pg_backend_pid() % 16)::smallint $$;

ALTER TABLE task_counts ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE task_counts DROP CONSTRAINT task_counts_pkey,
  ADD PRIMARY KEY (project_id, status, shard);
ALTER TABLE task_completions ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE task_completions DROP CONSTRAINT task_completions_pkey,
  ADD PRIMARY KEY (project_id, bucket, shard);

-- A task's count moves from (OLD) to (NEW) in the caller's shard; it leaves and joins
-- completion buckets. A bucket past the two hours readers look at is left alone.
CREATE OR REPLACE FUNCTION task_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  me SMALLINT := count_shard();
  old_bucket BIGINT;
  new_bucket BIGINT;
BEGIN
  IF (OLD.project_id, OLD.status) IS DISTINCT FROM (NEW.project_id, NEW.status) THEN
    INSERT INTO task_counts AS c (project_id, status, shard, n)
      SELECT p, s, me, d
        FROM (VALUES (OLD.project_id, OLD.status, -1), (NEW.project_id, NEW.status, 1))
             AS v (p, s, d)
       ORDER BY p, s
      ON CONFLICT (project_id, status, shard) DO UPDATE SET n = c.n + excluded.n;
  END IF;
  IF OLD.status = 'completed' AND OLD.completed_at IS NOT NULL THEN
    old_bucket := OLD.completed_at / 10000;
  END IF;
  IF NEW.status = 'completed' AND NEW.completed_at IS NOT NULL THEN
    new_bucket := NEW.completed_at / 10000;
  END IF;
  IF (OLD.project_id, old_bucket) IS NOT DISTINCT FROM (NEW.project_id, new_bucket) THEN
    RETURN NULL;
  END IF;
  IF old_bucket IS NOT NULL THEN
    -- Rare (a completed task changed again): decrement a row that exists.
    UPDATE task_completions c SET n = c.n - 1
     WHERE (c.project_id, c.bucket, c.shard) IN (
       SELECT x.project_id, x.bucket, x.shard FROM task_completions x
        WHERE x.project_id = OLD.project_id AND x.bucket = old_bucket
        ORDER BY x.shard = me DESC, x.shard LIMIT 1);
  END IF;
  IF new_bucket IS NOT NULL THEN
    INSERT INTO task_completions AS c (project_id, bucket, shard, n)
      VALUES (NEW.project_id, new_bucket, me, 1)
      ON CONFLICT (project_id, bucket, shard) DO UPDATE SET n = c.n + 1;
    DELETE FROM task_completions
      WHERE project_id = NEW.project_id AND shard = me AND bucket < new_bucket - 720;
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION task_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  me SMALLINT := count_shard();
BEGIN
  INSERT INTO task_counts AS c (project_id, status, shard, n)
    SELECT project_id, status, me, count(*) FROM new_tasks GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (project_id, status, shard) DO UPDATE SET n = c.n + excluded.n;
  INSERT INTO task_completions AS c (project_id, bucket, shard, n)
    SELECT project_id, completed_at / 10000, me, count(*) FROM new_tasks
     WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (project_id, bucket, shard) DO UPDATE SET n = c.n + excluded.n;
  DELETE FROM task_completions c
   USING (SELECT project_id, max(completed_at) / 10000 AS bucket FROM new_tasks
           WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1) AS d
   WHERE c.project_id = d.project_id AND c.shard = me AND c.bucket < d.bucket - 720;
  RETURN NULL;
END $$;

-- Decrements only, of one existing row per (project, status) and (project, bucket):
-- the caller's shard if it has the row, else the lowest shard that has it. The rows
-- are locked in key order first and their keys kept, and exactly those are changed
-- (choosing again could pick a row made in between, unlocked and out of order: a
-- deadlock an outside review reproduced).
CREATE OR REPLACE FUNCTION task_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  me SMALLINT := count_shard();
  keys TEXT[];
BEGIN
  SELECT array_agg(k ORDER BY k) INTO keys FROM (
    SELECT c.project_id || '/' || c.status || '/' || c.shard AS k FROM task_counts c
     WHERE (c.project_id, c.status, c.shard) IN (
       SELECT DISTINCT ON (x.project_id, x.status) x.project_id, x.status, x.shard
         FROM task_counts x
         JOIN (SELECT DISTINCT project_id, status FROM old_tasks) AS d USING (project_id, status)
        ORDER BY x.project_id, x.status, x.shard = me DESC, x.shard)
     ORDER BY c.project_id, c.status, c.shard FOR UPDATE) AS l;
  UPDATE task_counts c SET n = c.n - d.n
    FROM (SELECT project_id, status, count(*) AS n FROM old_tasks GROUP BY 1, 2) AS d
   WHERE c.project_id = d.project_id AND c.status = d.status
     AND c.project_id || '/' || c.status || '/' || c.shard = ANY (keys);
  SELECT array_agg(k ORDER BY k) INTO keys FROM (
    SELECT c.project_id || '/' || c.bucket || '/' || c.shard AS k FROM task_completions c
     WHERE (c.project_id, c.bucket, c.shard) IN (
       SELECT DISTINCT ON (x.project_id, x.bucket) x.project_id, x.bucket, x.shard
         FROM task_completions x
         JOIN (SELECT DISTINCT project_id, completed_at / 10000 AS bucket FROM old_tasks
                WHERE status = 'completed' AND completed_at IS NOT NULL) AS d
           USING (project_id, bucket)
        ORDER BY x.project_id, x.bucket, x.shard = me DESC, x.shard)
     ORDER BY c.project_id, c.bucket, c.shard FOR UPDATE) AS l;
  UPDATE task_completions c SET n = c.n - d.n
    FROM (SELECT project_id, completed_at / 10000 AS bucket, count(*) AS n FROM old_tasks
           WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1, 2) AS d
   WHERE c.project_id = d.project_id AND c.bucket = d.bucket
     AND c.project_id || '/' || c.bucket || '/' || c.shard = ANY (keys);
  RETURN NULL;
END $$;
