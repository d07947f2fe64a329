"""Shared test helpers, imported as ``from helpers.<module> import …`` (pytest puts ``tests/`` on
``sys.path`` through ``pythonpath`` in pyproject.toml, so no test edits ``sys.path`` itself).

One module per job, so a test area pulls in only what it drives:

- ``ci``: the missing-infrastructure rule (``skip_or_fail``: skip locally, fail under ``CI=true``),
  ``require_root`` / ``require_tool``, ``free_port``, ``die_with_parent`` for child processes.
- ``platformproc``: ``tcworker queue serve`` as a child process (``PlatformProcess``).
- ``workerproc``: ``tcworker run`` as a child process (``WorkerProcess``, ``start_worker_process``).
- ``submitter``: tasks submitted and awaited through the official client (``Submitter``).
- ``taskprocs``: every OS process a task left behind, found by its ``E2E_MARK`` variable.
- ``tasks``: createTask bodies (``task_def``), queue ids and timestamps.
- ``platformapi``: official-schema checks and queue calls of the platform acceptance tests.
- ``engines``: driving an engine's Sandbox directly (configs, run contexts, process checks).
- ``logs``: task logs that keep what they are given.
- ``dockerimage`` / ``dockerruns`` / ``dockerfixtures``: the busybox test image, docker-engine
  configs and runs, and the ``docker_client`` / ``test_image`` fixtures.
- ``gpg``: real GnuPG keys for encryptedEnv; ``superseding``: superseder service and queue proxy.
"""
