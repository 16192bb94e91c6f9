-- 0001: the initial schema. Append-only: a released migration is never edited.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC); the API formats them.

CREATE TABLE projects (
  id          INTEGER PRIMARY KEY AUTOINCREMENT,
  name        TEXT    NOT NULL,
  description TEXT    NOT NULL DEFAULT '',
  status      TEXT    NOT NULL DEFAULT 'active',
  version     INTEGER NOT NULL DEFAULT 1,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);
CREATE INDEX projects_status_id ON projects(status, id);

CREATE TABLE tasks (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  project_id       INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  title            TEXT    NOT NULL,
  description      TEXT    NOT NULL DEFAULT '',
  status           TEXT    NOT NULL DEFAULT 'pending',
  priority         INTEGER NOT NULL DEFAULT 0,
  assignee         TEXT,
  labels           TEXT    NOT NULL DEFAULT '[]',
  metadata         TEXT    NOT NULL DEFAULT '{}',
  result           TEXT,
  version          INTEGER NOT NULL DEFAULT 1,
  lease_expires_at INTEGER,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  started_at       INTEGER,
  completed_at     INTEGER
);
-- list by project (+ cursor on id), list by status, list by assignee
CREATE INDEX tasks_project_status_id   ON tasks(project_id, status, id);
CREATE INDEX tasks_project_assignee_id ON tasks(project_id, assignee, id);
-- sorts
CREATE INDEX tasks_project_priority    ON tasks(project_id, priority DESC, id);
CREATE INDEX tasks_project_updated     ON tasks(project_id, updated_at, id);
-- claim: best pending task, and tasks whose lease ran out
CREATE INDEX tasks_claim   ON tasks(project_id, status, priority DESC, created_at, id);
CREATE INDEX tasks_lease   ON tasks(project_id, status, lease_expires_at);
-- stats: completed in the last hour
CREATE INDEX tasks_completed ON tasks(project_id, status, completed_at);

-- One row per (task, label): label filters and label claims use an index, not a
-- scan of every task's JSON.
CREATE TABLE task_labels (
  project_id INTEGER NOT NULL,
  label      TEXT    NOT NULL,
  task_id    INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
  PRIMARY KEY (project_id, label, task_id)
) WITHOUT ROWID;
CREATE INDEX task_labels_task ON task_labels(task_id);

CREATE TABLE events (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  task_id    INTEGER,
  type       TEXT    NOT NULL,
  actor      TEXT,
  changes    TEXT    NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL
);
CREATE INDEX events_project_id ON events(project_id, id);

CREATE TABLE api_keys (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  name       TEXT    NOT NULL,
  role       TEXT    NOT NULL CHECK (role IN ('read', 'write')),
  prefix     TEXT    NOT NULL,
  hash       BLOB    NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);
