"""taskcluster-proxy in the worker's own event loop (spec/worker.md §5.2).

``signing`` holds the run's current credentials and signs requests and bewits with them,
``peers`` decides who may connect, ``server`` is the aiohttp application and its listeners, and
``forwarders`` adds docker-worker's other proxies (relengapi, balrog, testdroid) as plain
credential-adding forwarders. The feature modules in ``tcworker.features`` wire them to a run.
"""
