"""Queue service of the local platform: tasks, runs, claims, artifacts."""
