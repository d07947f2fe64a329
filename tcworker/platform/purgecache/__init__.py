"""Purge-cache service of the local platform: requests to purge worker caches."""
