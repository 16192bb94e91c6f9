-- 0007: the queue's figures of SPEC §5a that do not depend on the clock — waiting
-- (pending with deps_waiting > 0), retrying (pending with attempt > 0) and dead
-- (failed with dead) — kept as counters too (issue #19), so stats costs O(statuses)
-- however many dead letters a project keeps. They are extra keys of 0003's
-- task_counts, under reserved status words that contain a ':' (no status does):
-- 'pending:waiting', 'pending:retrying', 'failed:dead'. The by-status readers skip
-- them (`instr(status, ':') = 0`). They are changed by triggers in the same
-- transaction as every write that changes one of those columns, so they cannot
-- drift from the rows. `scheduled` (pending with not_before > now) depends on the
-- clock and stays on its partial index, tasks_scheduled (0005).

-- Backfill from the rows already there (the migration runs in one immediate
-- transaction: no writer in between).
INSERT INTO task_counts (project_id, status, n)
  SELECT project_id, 'pending:waiting', count(*) FROM tasks
   WHERE status = 'pending' AND deps_waiting > 0 GROUP BY project_id
  UNION ALL
  SELECT project_id, 'pending:retrying', count(*) FROM tasks
   WHERE status = 'pending' AND attempt > 0 GROUP BY project_id
  UNION ALL
  SELECT project_id, 'failed:dead', count(*) FROM tasks
   WHERE status = 'failed' AND dead = 1 GROUP BY project_id;

CREATE TRIGGER task_substates_insert AFTER INSERT ON tasks
  WHEN (NEW.status = 'pending' AND (NEW.deps_waiting > 0 OR NEW.attempt > 0))
    OR (NEW.status = 'failed' AND NEW.dead = 1)
BEGIN
  INSERT INTO task_counts (project_id, status, n)
    SELECT NEW.project_id, k, 1 FROM (
      SELECT 'pending:waiting' AS k WHERE NEW.status = 'pending' AND NEW.deps_waiting > 0
      UNION ALL SELECT 'pending:retrying' WHERE NEW.status = 'pending' AND NEW.attempt > 0
      UNION ALL SELECT 'failed:dead' WHERE NEW.status = 'failed' AND NEW.dead = 1)
    WHERE true
    ON CONFLICT (project_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER task_substates_delete AFTER DELETE ON tasks
  WHEN (OLD.status = 'pending' AND (OLD.deps_waiting > 0 OR OLD.attempt > 0))
    OR (OLD.status = 'failed' AND OLD.dead = 1)
BEGIN
  UPDATE task_counts SET n = n - 1
   WHERE project_id = OLD.project_id AND status IN (
     SELECT 'pending:waiting' WHERE OLD.status = 'pending' AND OLD.deps_waiting > 0
     UNION ALL SELECT 'pending:retrying' WHERE OLD.status = 'pending' AND OLD.attempt > 0
     UNION ALL SELECT 'failed:dead' WHERE OLD.status = 'failed' AND OLD.dead = 1);
END;

-- The row leaves the keys it was in and joins the ones it is in now; a key it stays
-- in is left alone.
CREATE TRIGGER task_substates_update
  AFTER UPDATE OF status, project_id, deps_waiting, attempt, dead ON tasks
  WHEN OLD.project_id IS NOT NEW.project_id
    OR (OLD.status = 'pending' AND OLD.deps_waiting > 0)
       IS NOT (NEW.status = 'pending' AND NEW.deps_waiting > 0)
    OR (OLD.status = 'pending' AND OLD.attempt > 0)
       IS NOT (NEW.status = 'pending' AND NEW.attempt > 0)
    OR (OLD.status = 'failed' AND OLD.dead = 1) IS NOT (NEW.status = 'failed' AND NEW.dead = 1)
BEGIN
  UPDATE task_counts SET n = n - 1
   WHERE project_id = OLD.project_id AND status IN (
     SELECT 'pending:waiting' WHERE OLD.status = 'pending' AND OLD.deps_waiting > 0
     UNION ALL SELECT 'pending:retrying' WHERE OLD.status = 'pending' AND OLD.attempt > 0
     UNION ALL SELECT 'failed:dead' WHERE OLD.status = 'failed' AND OLD.dead = 1);
  INSERT INTO task_counts (project_id, status, n)
    SELECT NEW.project_id, k, 1 FROM (
      SELECT 'pending:waiting' AS k WHERE NEW.status = 'pending' AND NEW.deps_waiting > 0
      UNION ALL SELECT 'pending:retrying' WHERE NEW.status = 'pending' AND NEW.attempt > 0
      UNION ALL SELECT 'failed:dead' WHERE NEW.status = 'failed' AND NEW.dead = 1)
    WHERE true
    ON CONFLICT (project_id, status) DO UPDATE SET n = n + 1;
END;

-- Read by nothing any more: every write that touched them now pays for the counter
-- instead. (A project's deleted rows go with 0003's task_counts_project_delete.)
DROP INDEX tasks_waiting;
DROP INDEX tasks_retrying;
DROP INDEX tasks_dead;
