"""Interactive shells of running tasks over a websocket (generic-worker's wire protocol)."""
