"""Live logs: the worker's HTTP server that streams running tasks' logs (``server``)."""
