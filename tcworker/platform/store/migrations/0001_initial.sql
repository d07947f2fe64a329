-- Initial schema of the local Taskcluster platform. Never edit: add 0002_*.sql instead.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE task_groups (
    task_group_id TEXT PRIMARY KEY,
    scheduler_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    sealed_ms INTEGER
);

CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    task_queue_id TEXT NOT NULL,
    scheduler_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    task_group_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    retries_left INTEGER NOT NULL,
    requires TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    runs TEXT NOT NULL,
    state TEXT NOT NULL,
    taken_until_ms INTEGER,
    pending_order INTEGER,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_pending ON tasks (task_queue_id, priority DESC, pending_order) WHERE state = 'pending';
CREATE INDEX tasks_claimed ON tasks (taken_until_ms) WHERE state = 'running';
CREATE INDEX tasks_unresolved ON tasks (deadline_ms) WHERE state IN ('unscheduled', 'pending', 'running');
CREATE INDEX tasks_expires ON tasks (expires_ms);
CREATE INDEX tasks_group ON tasks (task_group_id, task_id);
CREATE INDEX tasks_queue_state ON tasks (task_queue_id, state);

CREATE TABLE task_dependencies (
    required_task_id TEXT NOT NULL,
    dependent_task_id TEXT NOT NULL,
    requires TEXT NOT NULL,
    satisfied INTEGER NOT NULL DEFAULT 0,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (required_task_id, dependent_task_id)
);
CREATE INDEX task_dependencies_dependent ON task_dependencies (dependent_task_id, satisfied);

CREATE TABLE artifacts (
    task_id TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    storage_type TEXT NOT NULL,
    content_type TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    present INTEGER NOT NULL,
    details TEXT NOT NULL,
    PRIMARY KEY (task_id, run_id, name)
);
CREATE INDEX artifacts_expires ON artifacts (expires_ms);

CREATE TABLE objects (
    name TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    finished INTEGER NOT NULL DEFAULT 0,
    hashes TEXT NOT NULL DEFAULT '{}',
    content_type TEXT,
    content_length INTEGER,
    data_file TEXT NOT NULL,
    data_hashes TEXT
);
CREATE INDEX objects_expires ON objects (expires_ms);

CREATE TABLE index_entries (
    namespace TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    rank REAL NOT NULL,
    data TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX index_entries_expires ON index_entries (expires_ms);

CREATE TABLE purge_requests (
    worker_pool_id TEXT NOT NULL,
    cache_name TEXT NOT NULL,
    before_ms INTEGER NOT NULL,
    PRIMARY KEY (worker_pool_id, cache_name)
);
