-- 0004: retention (SPEC §5c, issue #20). The pruner deletes finished tasks and old
-- events in batches of a few hundred rows; these indexes let each batch find its
-- rows without a scan, and the storage settings below let autovacuum keep up so the
-- space of deleted rows is reused and the relations stop growing.

-- Failed and cancelled tasks by the instant that ages them (completed ones use 0001's
-- tasks_completed). Only tasks entering these two states pay for the index.
CREATE INDEX tasks_finished ON tasks(project_id,
  (CASE WHEN status = 'cancelled' THEN updated_at ELSE coalesce(completed_at, updated_at) END))
  WHERE status IN ('failed', 'cancelled');
-- A pruned task takes its events with it.
CREATE INDEX events_task ON events(task_id) WHERE task_id IS NOT NULL;

-- Autovacuum for the hot tables. 0001 lowered the scale factors to 5 %; at tens of
-- millions of rows 5 % is still millions of dead rows between vacuums, so vacuum
-- after 1 % plus a fixed 10 000 rows, and let it work without sleeping as often
-- (cost limit 2000 instead of 200 per 2 ms nap): the pruner's deletes come in a
-- steady stream and vacuum has to keep pace with them, not catch up at night.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.01,
                       autovacuum_vacuum_threshold = 10000,
                       autovacuum_vacuum_cost_limit = 2000);
-- events is append-mostly: an insert-triggered vacuum (PostgreSQL 13+) marks its
-- pages all-visible (index-only scans, cheap later vacuums); deletes by the pruner
-- trigger the ordinary one.
ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01,
                        autovacuum_vacuum_threshold = 10000,
                        autovacuum_vacuum_insert_scale_factor = 0.05,
                        autovacuum_vacuum_cost_limit = 2000);
-- Labels go with their tasks (cascade): the same pace.
ALTER TABLE task_labels SET (autovacuum_vacuum_scale_factor = 0.01,
                             autovacuum_vacuum_threshold = 10000);
