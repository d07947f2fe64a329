-- The inspector lists a task group's tasks newest first (insertion order = rowid, descending).
-- Every index entry ends with the rowid, so this index hands them out in that order without a
-- sort, whatever the group's size; tasks_group (task_group_id, task_id) would need one.
-- task_group_id never changes, so only createTask pays for it (one small entry).
CREATE INDEX tasks_group_newest ON tasks (task_group_id);
