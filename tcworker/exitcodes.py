"""Process exit codes, numbered exactly as generic-worker's so that supervisors carry over."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """generic-worker's exit codes (spec/worker.md §1.2)."""

    TASKS_COMPLETE = 0
    CANT_LOAD_CONFIG = 64
    CANT_INSTALL_GENERIC_WORKER = 65
    REBOOT_REQUIRED = 67
    IDLE_TIMEOUT = 68
    INTERNAL_ERROR = 69
    WORKER_MANAGER_SHUTDOWN = 70
    WORKER_STOPPED = 71
    WORKER_SHUTDOWN = 72
    INVALID_CONFIG = 73
    CANT_CREATE_ED25519_KEYPAIR = 75
    CANT_COPY_TO_TEMP_FILE = 76
    CANT_SECURE_CONFIG = 77
    CANT_CONNECT_PROTOCOL_PIPE = 78
    CANT_CREATE_FILE = 79
    CANT_CREATE_DIRECTORY = 80
    CANT_UNARCHIVE = 81
    MISSING_ED25519_PRIVATE_KEY = 82
    CANT_GET_WORKER_STATUS = 84
