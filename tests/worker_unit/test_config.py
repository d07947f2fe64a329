"""Config loading: generic-worker's keys, defaults, exit 64 vs 73, every problem named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcworker import config as cfg
from tcworker.errors import ConfigError
from tcworker.exitcodes import ExitCode

VALID = {
    "rootURL": "http://127.0.0.1:1",
    "clientId": "worker",
    "accessToken": "secret-token-value",
    "workerId": "w1",
    "workerType": "wt",
    "ed25519SigningKeyLocation": "key",
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "generic-worker.config"
    path.write_text(json.dumps(data))
    return path


def test_defaults_are_generic_workers(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, VALID), environ={})
    assert c.provisionerId == "test-provisioner"
    assert c.workerGroup == "test-worker-group"
    assert c.tasksDir == "tasks"
    assert c.cachesDir == "caches"
    assert c.downloadsDir == "downloads"
    assert c.cleanUpTaskDirs is True
    assert c.requiredDiskSpaceMegabytes == 10240
    assert c.idleTimeoutSecs == 0
    assert c.numberOfTasksToRun == 0
    assert c.maxTaskRunTime == 86400
    assert c.engine == "simple"
    assert c.capacity == 1
    assert c.task_queue_id == "test-provisioner/wt"


def test_multiuser_tasks_dir_defaults_to_home(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, {**VALID, "engine": "multiuser"}), environ={})
    assert c.tasksDir == "/home"


def test_unreadable_file_exits_64(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        cfg.load(tmp_path / "missing.config", environ={})
    assert e.value.exit_code == ExitCode.CANT_LOAD_CONFIG


def test_not_json_exits_64(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as e:
        cfg.load(path, environ={})
    assert e.value.exit_code == 64


def test_unknown_key_exits_64_and_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        cfg.load(write(tmp_path, {**VALID, "bananas": 1}), environ={})
    assert e.value.exit_code == 64
    assert "bananas" in str(e.value)


@pytest.mark.parametrize(
    "key,value",
    [
        ("cleanUpTaskDirs", "true"),
        ("capacity", "4"),
        ("capacity", True),
        ("rootURL", 5),
        ("idleTimeoutSecs", 1.5),
    ],
)
def test_wrong_json_type_exits_64(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as e:
        cfg.load(write(tmp_path, {**VALID, key: value}), environ={})
    assert e.value.exit_code == 64
    assert key in str(e.value)


def test_every_problem_is_listed_with_exit_73(tmp_path: Path) -> None:
    data = {"capacity": 0, "engine": "podman", "publicIP": "not-an-ip"}
    with pytest.raises(ConfigError) as e:
        cfg.load(write(tmp_path, data), environ={})
    assert e.value.exit_code == ExitCode.INVALID_CONFIG
    text = str(e.value)
    for key in ("accessToken", "clientId", "rootURL", "workerId", "workerType", "ed25519SigningKeyLocation"):
        assert f"'{key}'" in text
    for key in ("capacity", "engine", "publicIP"):
        assert f"'{key}'" in text


def test_multiuser_capacity_needs_headless(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        cfg.load(write(tmp_path, {**VALID, "engine": "multiuser", "capacity": 2}), environ={})
    assert "headlessTasks" in str(e.value)
    cfg.load(
        write(tmp_path, {**VALID, "engine": "multiuser", "capacity": 2, "headlessTasks": True}), environ={}
    )


def test_port_ranges_must_not_overlap(tmp_path: Path) -> None:
    data = {**VALID, "capacity": 2, "livelogPortBase": 6000, "interactivePort": 6004}
    with pytest.raises(ConfigError) as e:
        cfg.load(write(tmp_path, data), environ={})
    assert "overlap" in str(e.value)


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    env = {"TASKCLUSTER_ROOT_URL": "http://env.example", "TASKCLUSTER_ACCESS_TOKEN": "env-token"}
    c = cfg.load(path, environ=env, flags={"rootURL": "http://flag.example"})
    assert c.rootURL == "http://flag.example"
    assert c.accessToken == "env-token"


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, {**VALID, "certificate": "cert-secret"}), environ={})
    assert "secret-token-value" not in repr(c)
    assert "cert-secret" not in repr(c)
    assert "secret-token-value" not in repr(c.private)
    assert c.credentials["accessToken"] == "secret-token-value"


def test_old_spelling_of_worker_type_metadata_is_accepted(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, {**VALID, "workerTypeMetaData": {"a": 1}}), environ={})
    assert c.workerTypeMetadata == {"a": 1}


def test_our_keys_have_documented_defaults(tmp_path: Path) -> None:
    c = cfg.load(write(tmp_path, VALID), environ={})
    assert (c.dockerImage, c.openpgpPrivateKeyLocation, c.allowPrivileged, c.reclaimIntervalSecs) == (
        "",
        "",
        False,
        0,
    )
    assert c.d2g("enableD2G") is False


def test_max_artifact_size_defaults_to_5_gib_and_must_be_positive(tmp_path: Path) -> None:
    assert cfg.load(write(tmp_path, VALID), environ={}).maxArtifactSizeMegabytes == 5120
    with pytest.raises(ConfigError) as exc:
        cfg.load(write(tmp_path, {**VALID, "maxArtifactSizeMegabytes": 0}), environ={})
    assert exc.value.exit_code == ExitCode.INVALID_CONFIG
    assert "maxArtifactSizeMegabytes" in str(exc.value)


def test_status_poll_interval_defaults_to_1_s_and_must_not_be_negative(tmp_path: Path) -> None:
    assert cfg.load(write(tmp_path, VALID), environ={}).statusPollIntervalSecs == 1
    assert cfg.load(write(tmp_path, {**VALID, "statusPollIntervalSecs": 0}), environ={}).statusPollIntervalSecs == 0
    with pytest.raises(ConfigError) as exc:
        cfg.load(write(tmp_path, {**VALID, "statusPollIntervalSecs": -1}), environ={})
    assert "statusPollIntervalSecs" in str(exc.value)
