-- 0006: what the retention pruner (SPEC §5c, issue #20) needs to find its rows without
-- scanning a table, so each of its batches stays a few milliseconds on the writer.
-- Completed tasks are found by 0002's tasks_completed (project_id, completed_at).
-- Failed and cancelled ones get their own partial index, by the instant that ages
-- them: completed_at for failed, updated_at for cancelled. Only tasks entering those
-- two states pay for it, not the hot path (create, claim, complete).
CREATE INDEX tasks_finished ON tasks(project_id,
  (CASE WHEN status = 'cancelled' THEN updated_at ELSE coalesce(completed_at, updated_at) END))
  WHERE status IN ('failed', 'cancelled');
-- A pruned task takes its events with it (when EVENT_RETENTION outlives
-- TASK_RETENTION they would otherwise stay until their own age).
CREATE INDEX events_task ON events(task_id) WHERE task_id IS NOT NULL;
