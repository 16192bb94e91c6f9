-- 0003: task counts by project and status, kept by triggers in the same transaction
-- as every change to a task's status, so stats and the tasks{status} gauge read a
-- handful of rows instead of counting a million (issue #19), and can never drift:
-- there is no code path that changes tasks without passing through these triggers
-- (foreign-key cascades fire them too).
CREATE TABLE task_counts (
  project_id INTEGER NOT NULL,
  status     TEXT    NOT NULL,
  n          INTEGER NOT NULL,
  PRIMARY KEY (project_id, status)
) WITHOUT ROWID;

INSERT INTO task_counts (project_id, status, n)
  SELECT project_id, status, count(*) FROM tasks GROUP BY project_id, status;

CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
  INSERT INTO task_counts (project_id, status, n) VALUES (NEW.project_id, NEW.status, 1)
    ON CONFLICT (project_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
  UPDATE task_counts SET n = n - 1
    WHERE project_id = OLD.project_id AND status = OLD.status;
END;

CREATE TRIGGER task_counts_update AFTER UPDATE OF status, project_id ON tasks
  WHEN OLD.status IS NOT NEW.status OR OLD.project_id IS NOT NEW.project_id
BEGIN
  UPDATE task_counts SET n = n - 1
    WHERE project_id = OLD.project_id AND status = OLD.status;
  INSERT INTO task_counts (project_id, status, n) VALUES (NEW.project_id, NEW.status, 1)
    ON CONFLICT (project_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER task_counts_project_delete AFTER DELETE ON projects BEGIN
  DELETE FROM task_counts WHERE project_id = OLD.id;
END;
