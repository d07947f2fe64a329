-- The inspector's group page shows a group's count of tasks per state. Counting them, even from
-- the tasks_group_state index alone, grows with the group (about 1 ms per 5,000 tasks here, the
-- largest single cost of that page with 10,000 tasks in the platform). The counts are kept here
-- instead, by triggers on every change of a task's existence or state, so the page reads at most
-- one row per state whatever the group's size; a transition pays one small indexed UPSERT.
CREATE TABLE task_group_state_counts (
    task_group_id TEXT NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (task_group_id, state)
) WITHOUT ROWID;

INSERT INTO task_group_state_counts (task_group_id, state, n)
    SELECT task_group_id, state, COUNT(*) FROM tasks GROUP BY task_group_id, state;

CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO task_group_state_counts (task_group_id, state, n) VALUES (new.task_group_id, new.state, 1)
        ON CONFLICT (task_group_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_group_state_counts SET n = n - 1
        WHERE task_group_id = old.task_group_id AND state = old.state;
    DELETE FROM task_group_state_counts
        WHERE task_group_id = old.task_group_id AND state = old.state AND n <= 0;
END;

CREATE TRIGGER tasks_count_state AFTER UPDATE OF state, task_group_id ON tasks
    WHEN old.state IS NOT new.state OR old.task_group_id IS NOT new.task_group_id BEGIN
    UPDATE task_group_state_counts SET n = n - 1
        WHERE task_group_id = old.task_group_id AND state = old.state;
    DELETE FROM task_group_state_counts
        WHERE task_group_id = old.task_group_id AND state = old.state AND n <= 0;
    INSERT INTO task_group_state_counts (task_group_id, state, n) VALUES (new.task_group_id, new.state, 1)
        ON CONFLICT (task_group_id, state) DO UPDATE SET n = n + 1;
END;

-- Only the counts read the (task_group_id, state) index: it goes, so a transition moves no
-- index entry there any more.
DROP INDEX tasks_group_state;
