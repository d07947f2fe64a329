-- Every task write paid for this index; queue counts use tasks_pending / tasks_claimed instead.
DROP INDEX IF EXISTS tasks_queue_state;
