"""Pool autoscale through the official SDK (azure-batch 15.1.0): enable, evaluate, disable, create with a
formula, the service's refusals, and a formula that really grows a pool under queued work and shrinks it when
idle (real agents; the server runs with `--autoscale-min-interval PT1S`, a batchyard extension)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential

from tests.support.batch import IMAGE, SKU, wait_idle_nodes
from tests.support.live import LiveServer, wait_for
from tests.support.raw import Raw, assert_error, pool_body


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(
        tmp_path_factory.mktemp("autoscale"), extra_args=["--autoscale-min-interval", "PT1S"]
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def c(fast: LiveServer) -> BatchClient:
    return BatchClient(endpoint=fast.endpoint, credential=AzureNamedKeyCredential(fast.account, fast.key))


@pytest.fixture(scope="module")
def raw(fast: LiveServer) -> Raw:
    return Raw(fast)


def _vm() -> m.VirtualMachineConfiguration:
    return m.VirtualMachineConfiguration(image_reference=IMAGE, node_agent_sku_id=SKU)


def _steady(c: BatchClient, pool_id: str) -> m.BatchPool:
    return wait_for(lambda: (p := c.get_pool(pool_id)).allocation_state == "steady" and p, 30, 0.05, "steady")


def test_enable_evaluate_disable_as_recorded(c: BatchClient, raw: Raw, uid: str) -> None:
    pool_id = f"as-{uid}"
    c.create_pool(
        m.BatchPoolCreateOptions(id=pool_id, vm_size="standard_d2s_v3", virtual_machine_configuration=_vm())
    )
    before = _steady(c, pool_id)
    assert before.enable_auto_scale is False and before.auto_scale_run is None

    opts = m.BatchPoolEnableAutoScaleOptions(
        auto_scale_formula="$TargetDedicatedNodes=2", auto_scale_evaluation_interval="PT06M00S"
    )
    c.enable_pool_auto_scale(pool_id, opts)
    pool = c.get_pool(pool_id)
    assert pool.etag == before.etag  # recorded: enableautoscale keeps the pool's ETag
    assert pool.enable_auto_scale is True
    assert pool.auto_scale_formula == "$TargetDedicatedNodes=2"
    assert pool.auto_scale_evaluation_interval == timedelta(minutes=6)
    # batchyard evaluates at once (an extension): the run is on the pool and the pool grows to its target
    assert pool.auto_scale_run is not None and pool.auto_scale_run.error is None
    assert (
        pool.auto_scale_run.results
        == "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    )
    assert pool.target_dedicated_nodes == 2
    wait_idle_nodes(c, pool_id, 2)

    run = c.evaluate_pool_auto_scale(
        pool_id, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes=3")
    )
    assert run.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    assert run.error is None and run.timestamp is not None
    assert c.get_pool(pool_id).target_dedicated_nodes == 2  # evaluate never applies

    failed = c.evaluate_pool_auto_scale(
        pool_id,
        m.BatchPoolEvaluateAutoScaleOptions(
            auto_scale_formula="$x = $PendingTasks.GetSample(TimeInterval_Hour, 90);"
        ),
    )
    assert failed.error is not None and failed.error.code == "InsufficientSampleData"
    assert failed.error.error_values and failed.error.error_values[0].name == "Message"

    assert_error(raw.post(f"/pools/{pool_id}/resize", {"targetDedicatedNodes": 1}), 409, "AutoScalingEnabled")

    c.disable_pool_auto_scale(pool_id)
    off = c.get_pool(pool_id)
    assert off.enable_auto_scale is False and off.auto_scale_formula is None
    assert off.etag != before.etag
    assert off.target_dedicated_nodes == 2  # the pool keeps its size
    assert raw.post(f"/pools/{pool_id}/resize", {"targetDedicatedNodes": 0}).status_code == 202
    wait_for(lambda: not list(c.list_nodes(pool_id)), 30, 0.1, "pool emptied")
    raw.delete(f"/pools/{pool_id}")


def test_formula_grows_the_pool_under_queued_work_and_shrinks_it_when_idle(
    c: BatchClient, raw: Raw, uid: str, tmp_path: Path
) -> None:
    pool_id, job_id = f"asq-{uid}", f"asq-job-{uid}"
    formula = (
        "$tasks = max(0, $PendingTasks.GetSample(1));\n"
        "$TargetDedicatedNodes = min(3, $tasks);\n"
        "$NodeDeallocationOption = taskcompletion;"
    )
    c.create_pool(
        m.BatchPoolCreateOptions(
            id=pool_id,
            vm_size="standard_d2s_v3",
            virtual_machine_configuration=_vm(),
            enable_auto_scale=True,
            auto_scale_formula=formula,
            auto_scale_evaluation_interval="PT1S",
        )
    )
    pool = _steady(c, pool_id)
    assert pool.enable_auto_scale is True and pool.target_dedicated_nodes == 0
    assert pool.auto_scale_run is not None and "$tasks=0" in (pool.auto_scale_run.results or "")

    # 15 tasks: a node that comes up first also prefetches 4 queued tasks (scheduler), so 5 per node keeps all
    # three nodes running
    go = tmp_path / "go"
    c.create_job(m.BatchJobCreateOptions(id=job_id, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    wait_cmd = f"/bin/sh -c 'while [ ! -e {go} ]; do sleep 0.05; done'"
    c.create_tasks(
        job_id,
        [m.BatchTaskCreateOptions(id=f"t{i}", command_line=wait_cmd) for i in range(15)],
    )

    wait_for(lambda: c.get_pool(pool_id).target_dedicated_nodes == 3, 30, 0.1, "target 3")
    wait_for(lambda: sum(1 for t in c.list_tasks(job_id) if t.state == "running") == 3, 60, 0.1, "3 running")
    # resource metrics are sampled from the nodes' process trees (psutil, on the server)
    probe = "$TargetDedicatedNodes=3;$mem=max($MemoryBytes.GetSample(1));$cpu=max($CPUPercent.GetSample(1));"

    def sampled() -> m.AutoScaleRun | None:
        run = c.evaluate_pool_auto_scale(
            pool_id, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=probe)
        )
        return run if run.error is None else None

    results = dict(
        kv.split("=", 1) for kv in (wait_for(sampled, 30, 0.2, "resource samples").results or "").split(";")
    )
    assert float(results["$mem"]) > 1_000_000 and float(results["$cpu"]) >= 0
    go.touch()
    wait_for(lambda: all(t.state == "completed" for t in c.list_tasks(job_id)), 60, 0.1, "tasks done")
    wait_for(lambda: c.get_pool(pool_id).target_dedicated_nodes == 0, 30, 0.1, "target 0")
    wait_for(lambda: not list(c.list_nodes(pool_id)), 30, 0.1, "nodes gone")
    assert all(t.execution_info and t.execution_info.result == "success" for t in c.list_tasks(job_id))
    raw.delete(f"/jobs/{job_id}")
    raw.delete(f"/pools/{pool_id}")


def test_history_shows_runs_with_their_inputs(raw: Raw, c: BatchClient, uid: str) -> None:
    pool_id = f"ash-{uid}"
    body = pool_body(
        pool_id,
        enableAutoScale=True,
        autoScaleFormula="$TargetDedicatedNodes=0;$n=$CurrentDedicatedNodes;",
        autoScaleEvaluationInterval="PT1S",
    )
    body.pop("targetDedicatedNodes", None)
    assert raw.post("/pools", body).status_code == 201
    runs = wait_for(
        lambda: (h := raw.json(f"/batchyard/pools/{pool_id}/autoscalehistory"))["runs"][1:] and h,
        30,
        0.1,
        "2 runs",
    )
    assert runs["minimumEvaluationInterval"] == "PT1S"
    first = runs["runs"][0]
    assert first["results"].startswith("$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;")
    assert first["inputs"]["currentDedicatedNodes"] == 0
    assert "$PendingTasks" in first["inputs"]["lastSamples"]
    raw.delete(f"/pools/{pool_id}")


# --- refusals -------------------------------------------------------------------------------------------------


@pytest.fixture
def plain(raw: Raw, uid: str) -> Iterator[str]:
    pool_id = f"asp-{uid}"
    assert raw.post("/pools", pool_body(pool_id, 0)).status_code == 201
    wait_for(lambda: raw.json(f"/pools/{pool_id}")["allocationState"] == "steady", 30, 0.05, "steady")
    yield pool_id
    raw.delete(f"/pools/{pool_id}")


@pytest.mark.parametrize(
    ("body", "status", "code", "values"),
    [
        ({}, 400, "MissingRequiredProperty", {"PropertyName": "autoScaleFormula"}),
        ({"autoScaleEvaluationInterval": "PT10M"}, 400, "MissingRequiredProperty", {}),
        ({"autoScaleFormula": "$TargetDedicatedNodes = ("}, 400, "AutoScalingFormulaSyntaxError", {}),
        ({"autoScaleFormula": ""}, 400, "InvalidPropertyValue", {"PropertyName": "autoScaleFormula"}),
        ({"autoScaleFormula": "$a=1;" * 2000}, 400, "AutoScalingFormulaTooLong", {}),
        ({"autoScaleFormula": 7}, 400, "InvalidPropertyValue", {"PropertyName": "autoScaleFormula"}),
        (
            {"autoScaleFormula": "$TargetDedicatedNodes=1", "autoScaleEvaluationInterval": "PT0.5S"},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "autoScaleEvaluationInterval"},
        ),
        (
            {"autoScaleFormula": "$TargetDedicatedNodes=1", "autoScaleEvaluationInterval": "P8D"},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "autoScaleEvaluationInterval"},
        ),
        (
            {"autoScaleFormula": "$TargetDedicatedNodes=1", "autoScaleEvaluationInterval": "soon"},
            400,
            "InvalidPropertyValue",
            {"PropertyName": "autoScaleEvaluationInterval"},
        ),
        (
            {"autoScaleFormula": "$TargetDedicatedNodes=1", "extra": 1},
            400,
            "UnsupportedProperty",
            {"PropertyName": "extra"},
        ),
    ],
)
def test_enable_refuses_bad_input(
    raw: Raw, plain: str, body: object, status: int, code: str, values: dict[str, str]
) -> None:
    before = raw.json(f"/pools/{plain}")
    assert_error(raw.post(f"/pools/{plain}/enableautoscale", body), status, code, **values)
    after = raw.json(f"/pools/{plain}")
    assert after["enableAutoScale"] is False and after["eTag"] == before["eTag"]


def test_formula_error_names_the_position(raw: Raw, plain: str) -> None:
    err = assert_error(
        raw.post(f"/pools/{plain}/enableautoscale", {"autoScaleFormula": "$a = 1;\n$b = nosuch(2);"}),
        400,
        "AutoScalingFormulaSyntaxError",
    )
    assert err["values"][0]["key"] == "Message" and err["values"][0]["value"].startswith("Line 2, Col ")


def test_evaluate_needs_autoscale_and_a_formula(raw: Raw, plain: str) -> None:
    assert_error(
        raw.post(f"/pools/{plain}/evaluateautoscale", {"autoScaleFormula": "$TargetDedicatedNodes=1"}),
        409,
        "OperationInvalidForCurrentState",
    )
    assert_error(raw.post(f"/pools/{plain}/evaluateautoscale", {}), 400, "MissingRequiredProperty")
    assert_error(
        raw.post(f"/pools/{plain}/evaluateautoscale", {"autoScaleFormula": "$x = ="}),
        400,
        "AutoScalingFormulaSyntaxError",
    )
    assert_error(raw.post(f"/pools/{plain}/evaluateautoscale", "[]"), 400, "InvalidRequestBody")


@pytest.mark.parametrize("op", ["enableautoscale", "disableautoscale", "evaluateautoscale"])
def test_unknown_pool_is_404(raw: Raw, op: str) -> None:
    assert_error(
        raw.post(f"/pools/nosuchpool/{op}", {"autoScaleFormula": "$TargetDedicatedNodes=1"}),
        404,
        "PoolNotFound",
    )


def test_history_of_unknown_pool_is_404(raw: Raw) -> None:
    assert_error(raw.get("/batchyard/pools/nosuchpool/autoscalehistory"), 404, "PoolNotFound")


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (
            {
                "enableAutoScale": True,
                "autoScaleFormula": "$TargetDedicatedNodes=1",
                "targetDedicatedNodes": 1,
            },
            "InvalidAutoScalingSettings",
        ),
        ({"enableAutoScale": True}, "MissingRequiredProperty"),
        (
            {"enableAutoScale": True, "autoScaleFormula": "$TargetDedicatedNodes = )"},
            "AutoScalingFormulaSyntaxError",
        ),
        (
            {
                "enableAutoScale": True,
                "autoScaleFormula": "$TargetDedicatedNodes=1",
                "autoScaleEvaluationInterval": "P200D",
            },
            "InvalidPropertyValue",
        ),
        ({"autoScaleFormula": "$TargetDedicatedNodes=1"}, "InvalidAutoScalingSettings"),
    ],
)
def test_create_refuses_bad_autoscale_settings(
    raw: Raw, uid: str, extra: dict[str, object], code: str
) -> None:
    body = pool_body(f"asc-{uid}", **extra)
    if extra.get("enableAutoScale") and "targetDedicatedNodes" not in extra:
        body.pop("targetDedicatedNodes", None)
    assert_error(raw.post("/pools", body), 400, code)
    assert raw.get(f"/pools/asc-{uid}").status_code == 404


@pytest.mark.parametrize("version", ["2018-08-01.7.0", "2023-05-01.17.0", "2025-06-01"])
def test_autoscale_in_other_api_versions(raw: Raw, uid: str, version: str) -> None:
    pool_id = f"asv-{uid}"
    body = pool_body(pool_id, enableAutoScale=True, autoScaleFormula="$TargetDedicatedNodes=0;")
    body.pop("targetDedicatedNodes")
    assert raw.request("POST", "/pools", json_body=body, api_version=version).status_code == 201
    pool = raw.json(f"/pools/{pool_id}", api_version=version)
    assert pool["enableAutoScale"] is True and pool["autoScaleEvaluationInterval"] == "PT15M"
    assert pool["autoScaleRun"]["results"].startswith("$TargetDedicatedNodes=0;")
    r = raw.request(
        "POST",
        f"/pools/{pool_id}/enableautoscale",
        json_body={"autoScaleFormula": "$y=1;"},
        api_version=version,
    )
    assert r.status_code == 200 and r.headers["ETag"] == pool["eTag"] and not r.content
    assert r.headers["DataServiceId"] == f"{raw.endpoint}/pools/{pool_id}/enableautoscale"
    r = raw.request(
        "POST",
        f"/pools/{pool_id}/evaluateautoscale",
        json_body={"autoScaleFormula": "$y=2;"},
        api_version=version,
    )
    assert r.status_code == 200 and r.json()["results"].endswith("$y=2"), r.text()
    r = raw.request("POST", f"/pools/{pool_id}/disableautoscale", api_version=version)
    assert r.status_code == 200 and r.headers["ETag"] != pool["eTag"]
    assert r.headers["DataServiceId"] == f"{raw.endpoint}/pools/{pool_id}/disableautoscale"
    raw.request("DELETE", f"/pools/{pool_id}", api_version=version)


def test_list_pools_filters_on_enable_autoscale(c: BatchClient, raw: Raw, uid: str) -> None:
    auto, fixed = f"asf-{uid}", f"asn-{uid}"
    body = pool_body(auto, enableAutoScale=True, autoScaleFormula="$TargetDedicatedNodes=0;")
    body.pop("targetDedicatedNodes")
    assert raw.post("/pools", body).status_code == 201
    assert raw.post("/pools", pool_body(fixed, 0)).status_code == 201
    on = {p.id for p in c.list_pools(filter="enableAutoScale eq true")}
    off = {p.id for p in c.list_pools(filter="enableAutoScale eq false")}
    assert auto in on and auto not in off and fixed in off and fixed not in on
    for p in (auto, fixed):
        raw.delete(f"/pools/{p}")


def test_conditional_and_malformed_requests(raw: Raw, plain: str) -> None:
    enable = {"autoScaleFormula": "$TargetDedicatedNodes=0"}
    stale = {"If-Match": '"0x8D0000000000000"'}
    assert_error(
        raw.request("POST", f"/pools/{plain}/enableautoscale", json_body=enable, headers=stale),
        412,
        "ConditionNotMet",
    )
    assert raw.json(f"/pools/{plain}")["enableAutoScale"] is False
    assert_error(raw.post(f"/pools/{plain}/enableautoscale", content="{not json"), 400, "InvalidRequestBody")
    assert_error(
        raw.post(f"/pools/{plain}/evaluateautoscale", {"autoScaleFormula": "$a=1;" * 2000}),
        400,
        "AutoScalingFormulaTooLong",
    )
    assert_error(
        raw.post(f"/pools/{plain}/evaluateautoscale", {"autoScaleFormula": ["$a=1"]}),
        400,
        "InvalidPropertyValue",
        PropertyName="autoScaleFormula",
    )
    assert_error(
        raw.get(f"/batchyard/pools/{plain}/autoscalehistory", api_version=None),
        400,
        "MissingRequiredQueryParameter",
    )
    r = raw.get(f"/batchyard/pools/{plain}/autoscalehistory", key="d3Jvbmc=")
    assert r.status_code == 403
    assert_error(raw.post(f"/batchyard/pools/{plain}/autoscalehistory"), 405, "UnsupportedHttpVerb")
