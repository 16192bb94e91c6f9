-- 0002: task counts by project and status, and completions in 10-second buckets,
-- kept by triggers in the same transaction as every change to a task (issue #19),
-- as SQLite's 0003 + 0004: stats and the tasks{status} gauge read a handful of rows
-- instead of counting every task, and cannot drift from the rows (foreign-key
-- cascades fire the triggers too).
--
-- Lock order: every writer locks its task rows first (the statement that changes
-- them), then these rows, in (project_id, status) order within a statement, then the
-- project's event lock. So claims (SKIP LOCKED on tasks) never wait for a task row
-- while holding a count row, and two moves between the same two statuses in
-- opposite directions lock the two count rows in the same order. Bucket rows come
-- after the (project, 'completed') count row, which every completion, un-completion
-- and delete of a completed task locks first: it orders bucket changes, the purge
-- included.

-- Writers are held off until the end of this migration, so the backfill below sees
-- every row the triggers will not.
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE task_counts (
  project_id BIGINT NOT NULL,
  status     TEXT   NOT NULL,
  n          BIGINT NOT NULL,
  PRIMARY KEY (project_id, status)
);

CREATE TABLE task_completions (
  project_id BIGINT NOT NULL,
  bucket     BIGINT NOT NULL, -- completed_at / 10000
  n          BIGINT NOT NULL,
  PRIMARY KEY (project_id, bucket)
);

INSERT INTO task_counts (project_id, status, n)
  SELECT project_id, status, count(*) FROM tasks GROUP BY project_id, status;

INSERT INTO task_completions (project_id, bucket, n)
  SELECT project_id, completed_at / 10000, count(*) FROM tasks
  WHERE status = 'completed' AND completed_at IS NOT NULL
  GROUP BY 1, 2;

-- One task changed (the API changes one task per statement): its count moves from
-- (OLD) to (NEW), and it leaves and joins completion buckets. Buckets older than two
-- hours are dropped as completions arrive; a decrement of a dropped bucket finds
-- nothing, so it is an UPDATE, never an upsert.
CREATE FUNCTION task_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_bucket BIGINT;
  new_bucket BIGINT;
BEGIN
  IF (OLD.project_id, OLD.status) IS DISTINCT FROM (NEW.project_id, NEW.status) THEN
    -- Both rows in one statement, in key order (see the top of this file).
    INSERT INTO task_counts AS c (project_id, status, n)
      SELECT p, s, d
        FROM (VALUES (OLD.project_id, OLD.status, -1), (NEW.project_id, NEW.status, 1))
             AS v (p, s, d)
       ORDER BY p, s
      ON CONFLICT (project_id, status) DO UPDATE SET n = c.n + excluded.n;
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
    UPDATE task_completions SET n = n - 1
      WHERE project_id = OLD.project_id AND bucket = old_bucket;
  END IF;
  IF new_bucket IS NOT NULL THEN
    INSERT INTO task_completions AS c (project_id, bucket, n)
      VALUES (NEW.project_id, new_bucket, 1)
      ON CONFLICT (project_id, bucket) DO UPDATE SET n = c.n + 1;
    DELETE FROM task_completions
      WHERE project_id = NEW.project_id AND bucket < new_bucket - 720;
  END IF;
  RETURN NULL;
END $$;

-- Tasks inserted or deleted, one or many (a bulk load, a project's by the
-- foreign-key cascade): statement-level triggers over the rows, so a statement
-- changes each count row once, not once per task. (Each change of a row leaves a
-- version behind that later changes in the same transaction walk past: 200 000
-- inserts with a row-level trigger took over ten minutes.)
CREATE FUNCTION task_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts AS c (project_id, status, n)
    SELECT project_id, status, count(*) FROM new_tasks GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (project_id, status) DO UPDATE SET n = c.n + excluded.n;
  INSERT INTO task_completions AS c (project_id, bucket, n)
    SELECT project_id, completed_at / 10000, count(*) FROM new_tasks
     WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (project_id, bucket) DO UPDATE SET n = c.n + excluded.n;
  DELETE FROM task_completions c
   USING (SELECT project_id, max(completed_at) / 10000 AS bucket FROM new_tasks
           WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1) AS d
   WHERE c.project_id = d.project_id AND c.bucket < d.bucket - 720;
  RETURN NULL;
END $$;

-- Decrements only, never an upsert: in a project's cascade this runs after
-- task_counts_project_delete has removed the project's rows, and must not bring
-- them back. The rows are locked in key order first, as everywhere.
CREATE FUNCTION task_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM task_counts
    WHERE (project_id, status) IN (SELECT project_id, status FROM old_tasks)
    ORDER BY project_id, status FOR UPDATE;
  UPDATE task_counts c SET n = c.n - d.n
    FROM (SELECT project_id, status, count(*) AS n FROM old_tasks GROUP BY 1, 2) AS d
   WHERE c.project_id = d.project_id AND c.status = d.status;
  UPDATE task_completions c SET n = c.n - d.n
    FROM (SELECT project_id, completed_at / 10000 AS bucket, count(*) AS n FROM old_tasks
           WHERE status = 'completed' AND completed_at IS NOT NULL GROUP BY 1, 2) AS d
   WHERE c.project_id = d.project_id AND c.bucket = d.bucket;
  RETURN NULL;
END $$;

-- A deleted project keeps no counts. (PostgreSQL fires the statement-level
-- triggers of the cascaded task delete after this one.)
CREATE FUNCTION task_counts_project_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM task_counts WHERE project_id IN (SELECT id FROM old_projects);
  DELETE FROM task_completions WHERE project_id IN (SELECT id FROM old_projects);
  RETURN NULL;
END $$;

CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
  REFERENCING NEW TABLE AS new_tasks
  FOR EACH STATEMENT EXECUTE FUNCTION task_counts_insert();
CREATE TRIGGER task_counts_update AFTER UPDATE OF status, completed_at, project_id ON tasks
  FOR EACH ROW
  WHEN ((OLD.project_id, OLD.status, OLD.completed_at)
        IS DISTINCT FROM (NEW.project_id, NEW.status, NEW.completed_at))
  EXECUTE FUNCTION task_counts_update();
CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks
  REFERENCING OLD TABLE AS old_tasks
  FOR EACH STATEMENT EXECUTE FUNCTION task_counts_delete();
CREATE TRIGGER task_counts_project_delete AFTER DELETE ON projects
  REFERENCING OLD TABLE AS old_projects
  FOR EACH STATEMENT EXECUTE FUNCTION task_counts_project_delete();
