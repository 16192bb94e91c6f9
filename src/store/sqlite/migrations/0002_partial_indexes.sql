-- 0002: the claim, lease and completion indexes hold only the rows they serve.
-- A task is pending, in progress or completed, so each insert and each claim used
-- to update three indexes that two of its states never read; as partial indexes a
-- new pending task touches one of them and a claim moves between two.
DROP INDEX tasks_claim;
CREATE INDEX tasks_claim ON tasks(project_id, priority DESC, created_at, id)
  WHERE status = 'pending';
DROP INDEX tasks_lease;
CREATE INDEX tasks_lease ON tasks(project_id, lease_expires_at)
  WHERE status = 'in_progress';
DROP INDEX tasks_completed;
CREATE INDEX tasks_completed ON tasks(project_id, completed_at)
  WHERE status = 'completed';
