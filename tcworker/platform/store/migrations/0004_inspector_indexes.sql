-- Indexes of the task inspector's group page (tcworker/platform/inspector/views.py).
--
-- A group's tasks newest first (insertion order = rowid, descending): every index entry ends
-- with the rowid, so this index hands them out in that order without a sort, whatever the
-- group's size (tasks_group (task_group_id, task_id) would need one). task_group_id never
-- changes, so only createTask pays for it.
CREATE INDEX tasks_group_newest ON tasks (task_group_id);
-- The group's count of tasks per state, read from the index alone: without it the count reads
-- every task row of the group (about 45 ms for 10,000 tasks here, 1 ms with it). A state change
-- moves one small entry; measured against the ~1 ms of a task transition it is lost in the noise.
CREATE INDEX tasks_group_state ON tasks (task_group_id, state);
