-- 0006: the queue's figures of SPEC §5a that do not depend on the clock — waiting
-- (pending with deps_waiting > 0), retrying (pending with attempt > 0) and dead
-- (failed and dead) — kept as counters too (issue #19), as SQLite's 0007: extra keys
-- of task_counts under reserved status words containing a ':' (no status does),
-- 'pending:waiting', 'pending:retrying' and 'failed:dead', moved by the same
-- triggers, in the same statements, shards and lock order as the status keys of
-- 0002/0005. The by-status readers skip them (`status NOT LIKE '%:%'`). `scheduled`
-- (pending with not_before > now) depends on the clock and stays on its partial
-- index, tasks_scheduled (0003).
--
-- Lock order: a sub-state key sorts right after its status ('pending' <
-- 'pending:retrying' < 'pending:waiting', 'failed' < 'failed:dead' < 'in_progress'),
-- and every trigger changes all the keys of a statement in one statement, in
-- (project_id, status) order, as before. A batch insert's lock_counts (tasks.rs)
-- locks the statuses first; the only sub-state key a new task can have is
-- 'pending:waiting', which sorts after every status, so the order holds.

-- Writers are held off until the end of this migration, so the backfill below sees
-- every row the new triggers will not.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE task_counts IN ACCESS EXCLUSIVE MODE;

-- The count keys a task is in: its status, and the sub-states it is in.
CREATE FUNCTION task_count_keys(status TEXT, deps_waiting BIGINT, attempt BIGINT, dead BOOLEAN)
  RETURNS TEXT[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT array_remove(ARRAY[status,
    CASE WHEN status = 'pending' AND deps_waiting > 0 THEN 'pending:waiting' END,
    CASE WHEN status = 'pending' AND attempt > 0 THEN 'pending:retrying' END,
    CASE WHEN status = 'failed' AND dead THEN 'failed:dead' END], NULL) $$;

INSERT INTO task_counts AS c (project_id, status, shard, n)
  SELECT t.project_id, k, 0, count(*)
    FROM tasks t, unnest(task_count_keys(t.status, t.deps_waiting, t.attempt, t.dead)) AS k
   WHERE k LIKE '%:%'
   GROUP BY 1, 2
  ON CONFLICT (project_id, status, shard) DO UPDATE SET n = c.n + excluded.n;

-- A task leaves the keys it was in and joins those it is in now, in the caller's
-- shard; a key it stays in is not touched (nor locked).
CREATE OR REPLACE FUNCTION task_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  me SMALLINT := count_shard();
  old_keys TEXT[] := task_count_keys(OLD.status, OLD.deps_waiting, OLD.attempt, OLD.dead);
  new_keys TEXT[] := task_count_keys(NEW.status, NEW.deps_waiting, NEW.attempt, NEW.dead);
  old_bucket BIGINT;
  new_bucket BIGINT;
BEGIN
  IF (OLD.project_id, old_keys) IS DISTINCT FROM (NEW.project_id, new_keys) THEN
    INSERT INTO task_counts AS c (project_id, status, shard, n)
      SELECT p, s, me, sum(d)
        FROM (SELECT OLD.project_id, k, -1 FROM unnest(old_keys) AS k
              UNION ALL SELECT NEW.project_id, k, 1 FROM unnest(new_keys) AS k) AS v (p, s, d)
       GROUP BY p, s HAVING sum(d) <> 0
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
    SELECT t.project_id, k, me, count(*)
      FROM new_tasks t, unnest(task_count_keys(t.status, t.deps_waiting, t.attempt, t.dead)) AS k
     GROUP BY 1, 2 ORDER BY 1, 2
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

-- As 0005's, over every key of the deleted tasks (statuses and sub-states alike).
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
         JOIN (SELECT DISTINCT o.project_id, s AS status FROM old_tasks o,
                 unnest(task_count_keys(o.status, o.deps_waiting, o.attempt, o.dead)) AS s)
           AS d USING (project_id, status)
        ORDER BY x.project_id, x.status, x.shard = me DESC, x.shard)
     ORDER BY c.project_id, c.status, c.shard FOR UPDATE) AS l;
  UPDATE task_counts c SET n = c.n - d.n
    FROM (SELECT o.project_id, s AS status, count(*) AS n FROM old_tasks o,
            unnest(task_count_keys(o.status, o.deps_waiting, o.attempt, o.dead)) AS s
           GROUP BY 1, 2) AS d
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

-- The row trigger fires on the columns the sub-states read too.
DROP TRIGGER task_counts_update ON tasks;
CREATE TRIGGER task_counts_update
  AFTER UPDATE OF status, completed_at, project_id, deps_waiting, attempt, dead ON tasks
  FOR EACH ROW
  WHEN ((OLD.project_id, OLD.status, OLD.completed_at,
         OLD.deps_waiting > 0, OLD.attempt > 0, OLD.dead)
        IS DISTINCT FROM (NEW.project_id, NEW.status, NEW.completed_at,
                          NEW.deps_waiting > 0, NEW.attempt > 0, NEW.dead))
  EXECUTE FUNCTION task_counts_update();

-- Read by nothing any more: the writes that kept them now keep the counters.
DROP INDEX tasks_waiting;
DROP INDEX tasks_retrying;
DROP INDEX tasks_dead;
