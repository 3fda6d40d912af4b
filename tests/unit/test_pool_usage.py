"""Pool usage pieces without a server: folding an agent's cumulative figures across its restarts, the agent's
sampler, and the agent-protocol checks on what an agent may report (service.usage, agent.usage, api.agent_sync)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchyard.agent.usage import UsageSampler, dir_size
from batchyard.api.agent_sync import decode_sync
from batchyard.models import errors
from batchyard.service.usage import _merge, _totals


def _report(boot: str, cpu: float, peak: float) -> dict[str, float | str]:
    return {"boot": boot, "seconds": 10.0, "cpuSeconds": cpu, "coreSeconds": 20.0, "memPeakGiB": peak}


def test_a_restarted_agents_figures_add_to_the_earlier_ones() -> None:
    res = _merge(None, _report("a", 1.0, 0.5))
    res = _merge(res, _report("a", 3.0, 0.4))  # same process: cumulative, replaces
    assert _totals(res)["cpuSeconds"] == 3.0 and _totals(res)["memPeakGiB"] == 0.4
    res = _merge(res, _report("b", 2.0, 0.2))  # a new agent process starts from zero: the old one is folded
    t = _totals(json.loads(json.dumps(res)))
    assert t["cpuSeconds"] == 5.0 and t["seconds"] == 20.0 and t["memPeakGiB"] == 0.4


def test_sampler_measures_the_agent_tree(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 200_000)
    s = UsageSampler(tmp_path, interval=1.0)
    s.sample()
    sum(i * i for i in range(200_000))  # some CPU between two samples
    s.sample()
    snap = s.take()
    assert snap is not None and s.take() is None  # taken once
    assert snap["boot"] == s.boot and snap["seconds"] > 0 and snap["cpuSeconds"] > 0
    assert snap["memPeakGiB"] > 0 and snap["diskPeakGiB"] >= 200_000 / (1 << 30)
    s.give_back(snap)
    assert s.take() == snap
    assert dir_size(tmp_path) >= 200_000


def _sync(extra: str) -> bytes:
    return ('{"nodeId": "n", ' + extra + "}").encode()


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ('"stats": {"bogus": 1}', "UnsupportedProperty"),
        ('"stats": {"cpuSeconds": "many"}', "InvalidPropertyValue"),
        ('"stats": {"cpuSeconds": -1}', "InvalidPropertyValue"),
        ('"stats": {"memPeakGiB": 1e300}', "InvalidPropertyValue"),
        ('"mounts": {"state": "mounted"}', "InvalidPropertyValue"),
        ('"mounts": {"state": "failed", "errors": [{"code": 1}]}', "InvalidPropertyValue"),
    ],
)
def test_bad_reports_are_refused(extra: str, code: str) -> None:
    with pytest.raises(errors.BatchError) as e:
        decode_sync(_sync(extra))
    assert e.value.status == 400 and e.value.code == code


def test_good_reports_decode() -> None:
    body = decode_sync(_sync('"stats": {"boot": "b", "cpuSeconds": 1.5}, "mounts": {"state": "ok"}'))
    assert body.stats is not None and body.stats.cpuSeconds == 1.5
    assert body.mounts is not None and body.mounts.state == "ok"
