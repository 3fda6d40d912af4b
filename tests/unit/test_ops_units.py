"""Pure parts of running the server: core quotas, the agent start log, and the start-up checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchyard.cli.startup import ConfigError, check_port, dial_url, lock_data_dir, redact
from batchyard.models import startlog
from batchyard.pools.quota import nodes_allowed, quota_error, vm_cores


@pytest.mark.parametrize(
    ("size", "cores"),
    [
        ("standard_d2s_v3", 2),
        ("STANDARD_F72S_V2", 72),
        ("standard_e64-32s_v3", 64),
        ("standard_a1", 1),
        ("basic_a0", 1),
        ("standard_nc24ads_a100_v4", 24),
        ("", 1),
        ("weird", 1),
    ],
)
def test_vm_cores(size: str, cores: int) -> None:
    assert vm_cores(size) == cores


def test_nodes_allowed() -> None:
    assert nodes_allowed(1_000_000_000, 2, 0, 500) == 250
    assert nodes_allowed(3, 2, 0, 500) == 3
    assert nodes_allowed(5, 2, 499, 500) == 0
    assert nodes_allowed(5, 2, 600, 500) == 0  # quota lowered below what is in use
    assert nodes_allowed(5, 0, 0, 3) == 3


def test_quota_errors_name_the_kind() -> None:
    assert quota_error(True, 4, 2, 2)["code"] == "AccountCoreQuotaReached"
    low = quota_error(False, 4, 2, 2)
    assert low["code"] == "AccountLowPriorityCoreQuotaReached"
    assert "low priority core quota" in str(low["message"])


def test_start_log_survives_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert startlog.started(tmp_path) == set()
    monkeypatch.setattr(startlog, "MAX_BYTES", 64)
    log = startlog.StartLog(tmp_path)
    refs = [f"job/task{i}#{i % 3}" for i in range(10)]
    for r in refs:
        log.add(r)
    assert (tmp_path / (startlog.LOG_NAME + ".1")).exists()
    seen = startlog.started(tmp_path)
    assert refs[-1] in seen and refs[-4] in seen  # the newest are always there
    assert seen <= set(refs)


@pytest.mark.parametrize(
    ("bound", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8580"),
        ("::", "http://[::1]:8580"),
        ("::1", "http://[::1]:8580"),
        ("10.1.2.3", "http://10.1.2.3:8580"),
        ("fe80::1%eth0", "http://[fe80::1]:8580"),
    ],
)
def test_agents_dial_an_address_the_server_listens_on(bound: str, url: str) -> None:
    assert dial_url(bound, 8580) == url


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize("port", [0, -1, 65536, 99999])
def test_ports_out_of_range(port: int) -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        check_port(port)


def test_data_dir_lock_is_exclusive(tmp_path: Path) -> None:
    held = lock_data_dir(tmp_path)
    try:
        with pytest.raises(ConfigError, match=r"another batchyard server \(pid \d+\)"):
            lock_data_dir(tmp_path)
    finally:
        held.close()
    lock_data_dir(tmp_path).close()  # free again once the holder is gone
