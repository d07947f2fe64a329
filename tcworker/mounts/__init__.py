"""Mounts and caches of generic-worker payloads (spec/worker.md §2.5, §1.9; issue 12).

One module per job: ``spec`` reads ``payload.mounts``; ``content`` turns a content source
(artifact, indexed artifact, URL, raw, base64) into a verified file of the ``downloads`` store;
``formats`` opens compressed streams; ``extract`` unpacks archives safely; ``caches`` is the one
pool of writable cache directories (also docker-worker's ``cache``); ``purge`` applies
purge-cache requests to it; ``placement`` moves trees into and out of task directories without
following links the task may have planted; ``gc`` frees disk before each claim; ``hoststate``
holds the per-process stores every engine and feature share; ``progress`` lets ``tcworker local``
draw download progress.
"""
