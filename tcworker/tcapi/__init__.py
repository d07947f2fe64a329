"""The one HTTP plumbing to Taskcluster services: clients, retry policy, error translation, claims, uploads.

Worker core, features and engines all reach the queue, object, auth, index and purge-cache services
through this package, so there is one place that builds a client, one retry policy (the official
client's) and one translation of client errors into ``tcworker.errors``.
"""
