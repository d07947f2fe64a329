"""Index service of the local platform: namespaces → taskIds, plus route-based indexing."""
