"""Signed statements about what a task run produced, and their independent verification.

Neutral code shared by the chain-of-trust features (``tcworker.features.chain_of_trust``,
``tcworker.features.generate_certificate``) and ``tcworker verify``: key handling (``keys``),
the chain-of-trust document (``certificate``), the signed SLSA provenance in a DSSE envelope
(``slsa``), the OpenPGP clear-signed certificate of generic-worker ≤ 13 (``openpgp_cert``) and the
verifier (``verify``). Nothing here imports the worker core, so features may use all of it.
"""
