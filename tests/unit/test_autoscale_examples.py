"""Every example formula of the Azure docs article (batch-automatic-scaling) and of the reference, fed
with metrics as data, asserting the targets (and, where the service's output is on record, the text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batchyard.autoscale import INSUFFICIENT_SAMPLE_DATA, Evaluation, Inputs, Series, evaluate

NOW = datetime(2016, 10, 13, 19, 18, 47, 805000, tzinfo=UTC)  # Thursday, after work hours
MONDAY_NOON = datetime(2016, 10, 17, 12, 0, 0, tzinfo=UTC)
SATURDAY_NOON = datetime(2016, 10, 15, 12, 0, 0, tzinfo=UTC)


def flat(value: float, minutes: int, now: datetime = NOW, lag: timedelta = timedelta(0)) -> Series:
    """A full history of one value every 30 s over `minutes`, the newest `lag` old."""
    count = minutes * 2
    return Series.of((now - lag - timedelta(seconds=30 * i), value) for i in range(count))


def ok(result: Evaluation) -> Evaluation:
    assert result.error is None, result.error
    return result


# ---- "Sample autoscale formulas" ---------------------------------------------------------------------

PENDING_TASKS = """startingNumberOfVMs = 1;
maxNumberofVMs = 25;
pendingTaskSamplePercent = $PendingTasks.GetSamplePercent(180 * TimeInterval_Second);
pendingTaskSamples = pendingTaskSamplePercent < 70 ? startingNumberOfVMs : avg($PendingTasks.GetSample(180 * TimeInterval_Second));
$TargetDedicatedNodes=min(maxNumberofVMs, pendingTaskSamples);
$NodeDeallocationOption = taskcompletion;"""


def test_pending_tasks_formula_grows_with_queued_work_and_caps_at_25() -> None:
    few = ok(evaluate(PENDING_TASKS, Inputs(now=NOW, metrics={"$PendingTasks": flat(12, 10)})))
    assert (few.target_dedicated, few.node_deallocation_option) == (12, "taskcompletion")
    many = ok(evaluate(PENDING_TASKS, Inputs(now=NOW, metrics={"$PendingTasks": flat(400, 10)})))
    assert many.target_dedicated == 25
    assert many.results == (
        "$TargetDedicatedNodes=25;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion;"
        "$maxNumberofVMs=25;$pendingTaskSamplePercent=100;$pendingTaskSamples=400;$startingNumberOfVMs=1"
    )


def test_pending_tasks_formula_starts_with_one_node_without_history() -> None:
    fresh = ok(evaluate(PENDING_TASKS, Inputs(now=NOW)))
    assert fresh.target_dedicated == 1
    assert "$pendingTaskSamplePercent=0;" in fresh.results


PREEMPTED = """maxNumberofVMs = 25;
$TargetDedicatedNodes = min(maxNumberofVMs, $PreemptedNodeCount.GetSample(180 * TimeInterval_Second));
$TargetLowPriorityNodes = min(maxNumberofVMs , maxNumberofVMs - $TargetDedicatedNodes);
$NodeDeallocationOption = taskcompletion;"""


def test_preempted_nodes_formula_replaces_preempted_spot_nodes_with_dedicated() -> None:
    none = ok(evaluate(PREEMPTED, Inputs(now=NOW, metrics={"$PreemptedNodeCount": flat(0, 5)})))
    assert (none.target_dedicated, none.target_low_priority) == (0, 25)
    some = ok(
        evaluate(PREEMPTED, Inputs(now=NOW, preempted_nodes=4, metrics={"$PreemptedNodeCount": flat(4, 5)}))
    )
    assert (some.target_dedicated, some.target_low_priority) == (4, 21)


# ---- "Write an autoscale formula" (CPU) --------------------------------------------------------------

CPU = """$totalDedicatedNodes =
    (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ?
    ($CurrentDedicatedNodes * 1.1) : $CurrentDedicatedNodes;
$totalDedicatedNodes =
    (avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ?
    ($CurrentDedicatedNodes * 0.9) : $totalDedicatedNodes;
$TargetDedicatedNodes = min(400, $totalDedicatedNodes)"""


def test_cpu_formula_scales_up_when_busy_and_down_when_idle() -> None:
    busy = ok(evaluate(CPU, Inputs(now=NOW, current_dedicated=20, metrics={"$CPUPercent": flat(0.9, 60)})))
    assert busy.target_dedicated == 22
    idle = ok(evaluate(CPU, Inputs(now=NOW, current_dedicated=20, metrics={"$CPUPercent": flat(0.1, 60)})))
    assert idle.target_dedicated == 18
    middle = ok(evaluate(CPU, Inputs(now=NOW, current_dedicated=20, metrics={"$CPUPercent": flat(0.5, 60)})))
    assert middle.target_dedicated == 20
    huge = ok(evaluate(CPU, Inputs(now=NOW, current_dedicated=390, metrics={"$CPUPercent": flat(0.95, 60)})))
    assert huge.target_dedicated == 400


# ---- SDK snippets and the evaluate example -----------------------------------------------------------


def test_monday_formula_of_the_dotnet_snippets() -> None:
    formula = "$TargetDedicatedNodes = (time().weekday == 1 ? 5:1);"
    assert ok(evaluate(formula, Inputs(now=MONDAY_NOON))).target_dedicated == 5
    assert ok(evaluate(formula, Inputs(now=NOW))).target_dedicated == 1


def test_current_dedicated_keeps_the_pool_as_it_is() -> None:
    kept = ok(
        evaluate("$TargetDedicatedNodes = $CurrentDedicatedNodes;", Inputs(now=NOW, current_dedicated=7))
    )
    assert kept.target_dedicated == 7
    assert (
        ok(evaluate("$TargetDedicatedNodes = 0", Inputs(now=NOW, target_dedicated=3))).target_dedicated == 0
    )


WORKDAY = """$curTime = time();
$workHours = $curTime.hour >= 8 && $curTime.hour < 18;
$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;
$isWorkingWeekdayHour = $workHours && $isWeekday;
$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;"""


def test_evaluate_example_prints_what_the_docs_show() -> None:
    # The docs' output (2016, before low-priority nodes) plus today's $TargetLowPriorityNodes.
    result = ok(evaluate(WORKDAY, Inputs(now=NOW)))
    assert result.results == (
        "$TargetDedicatedNodes=10;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
        "$curTime=2016-10-13T19:18:47.805Z;$isWeekday=1;$isWorkingWeekdayHour=0;$workHours=0"
    )


def test_python_snippet_uses_the_alias() -> None:
    formula = WORKDAY.replace("$TargetDedicatedNodes =", "$TargetDedicated =")
    assert ok(evaluate(formula, Inputs(now=MONDAY_NOON))).target_dedicated == 20
    assert ok(evaluate(formula, Inputs(now=SATURDAY_NOON))).target_dedicated == 10


def test_example_1_time_based_with_a_time_zone_offset() -> None:
    formula = WORKDAY + "\n$NodeDeallocationOption = taskcompletion;"
    work = ok(evaluate(formula, Inputs(now=MONDAY_NOON)))
    assert (work.target_dedicated, work.node_deallocation_option) == (20, "taskcompletion")
    mdt = formula.replace("$curTime = time();", "$curTime = time() + (-6 * TimeInterval_Hour);")
    early = datetime(2016, 10, 17, 15, 0, 0, tzinfo=UTC)  # 09:00 in MDT
    assert ok(evaluate(mdt, Inputs(now=early))).target_dedicated == 20
    assert ok(evaluate(mdt, Inputs(now=datetime(2016, 10, 17, 9, 0, tzinfo=UTC)))).target_dedicated == 10


EXAMPLE_2 = """// Get pending tasks for the past 15 minutes.
$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);
// If we have fewer than 70 percent data points, we use the last sample point,
// otherwise we use the maximum of last sample point and the history average.
$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));
// If number of pending tasks is not 0, set targetVM to pending tasks, otherwise
// half of current dedicated.
$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);
// The pool size is capped at 20, if target VM value is more than that, set it
// to 20. This value should be adjusted according to your use case.
$TargetDedicatedNodes = max(0, min($targetVMs, 20));
// Set node deallocation mode - let running tasks finish before removing a node
$NodeDeallocationOption = taskcompletion;"""


def test_example_2_task_based() -> None:
    queued = ok(
        evaluate(EXAMPLE_2, Inputs(now=NOW, target_dedicated=2, metrics={"$PendingTasks": flat(8, 15)}))
    )
    assert queued.target_dedicated == 8
    flood = ok(evaluate(EXAMPLE_2, Inputs(now=NOW, metrics={"$PendingTasks": flat(1000, 15)})))
    assert flood.target_dedicated == 20
    idle = ok(
        evaluate(EXAMPLE_2, Inputs(now=NOW, target_dedicated=10, metrics={"$PendingTasks": flat(0, 15)}))
    )
    assert idle.target_dedicated == 5  # half of the current target
    # Too little history: the last sample alone decides.
    sparse = Series.of([(NOW - timedelta(minutes=2), 3.0)])
    last = ok(evaluate(EXAMPLE_2, Inputs(now=NOW, metrics={"$PendingTasks": sparse})))
    assert last.target_dedicated == 3
    assert "$samples=3.33333333333333;" in last.results


EXAMPLE_3 = """// Determine whether 70 percent of the samples have been recorded in the past
// 15 minutes; if not, use last sample
$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);
$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : max( $ActiveTasks.GetSample(1),avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));
// Set the number of nodes to add to one-fourth the number of active tasks (the
// MaxTasksPerComputeNode property on this pool is set to 4, adjust this number
// for your use case)
$cores = $TargetDedicatedNodes * 4;
$extraVMs = (($tasks - $cores) + 3) / 4;
$targetVMs = ($TargetDedicatedNodes + $extraVMs);
// Attempt to grow the number of compute nodes to match the number of active
// tasks, with a maximum of 3
$TargetDedicatedNodes = max(0,min($targetVMs,3));
// Keep the nodes active until the tasks finish
$NodeDeallocationOption = taskcompletion;"""


def test_example_3_parallel_tasks() -> None:
    one = ok(evaluate(EXAMPLE_3, Inputs(now=NOW, target_dedicated=1, metrics={"$ActiveTasks": flat(6, 15)})))
    assert one.target_dedicated == 2  # 1 + (6 - 4 + 3) / 4 = 2.25
    many = ok(
        evaluate(EXAMPLE_3, Inputs(now=NOW, target_dedicated=1, metrics={"$ActiveTasks": flat(100, 15)}))
    )
    assert many.target_dedicated == 3
    none = ok(evaluate(EXAMPLE_3, Inputs(now=NOW, target_dedicated=2, metrics={"$ActiveTasks": flat(0, 15)})))
    assert none.target_dedicated == 0  # 2 + (0 - 8 + 3) / 4 = 0.75 → 0


def example_4(created: datetime, initial: int = 4) -> str:
    """The docs' C# string.Format: {0} is DateTime.UtcNow.ToString("r"), {1} the initial size."""
    rfc1123 = created.strftime("%a, %d %b %Y %H:%M:%S GMT")
    return f"""
    $TargetDedicatedNodes = {initial};
    lifespan         = time() - time("{rfc1123}");
    span             = TimeInterval_Minute * 60;
    startup          = TimeInterval_Minute * 10;
    ratio            = 50;

    $TargetDedicatedNodes = (lifespan > startup ? (max($RunningTasks.GetSample(span, ratio), $ActiveTasks.GetSample(span, ratio)) == 0 ? 0 : $TargetDedicatedNodes) : {initial});
    """


def test_example_4_initial_pool_size() -> None:
    young = ok(evaluate(example_4(NOW - timedelta(minutes=5)), Inputs(now=NOW)))
    assert young.target_dedicated == 4
    assert "$lifespan=00:05:00.8050000" in young.results  # RFC 1123 has whole seconds
    idle = {"$RunningTasks": flat(0, 60), "$ActiveTasks": flat(0, 60)}
    old_idle = ok(evaluate(example_4(NOW - timedelta(hours=2)), Inputs(now=NOW, metrics=idle)))
    assert old_idle.target_dedicated == 0
    busy = {"$RunningTasks": flat(3, 60), "$ActiveTasks": flat(0, 60)}
    old_busy = ok(evaluate(example_4(NOW - timedelta(hours=2)), Inputs(now=NOW, metrics=busy)))
    assert old_busy.target_dedicated == 4
    # An old pool with too little history fails (the 50% requirement) and stays as it is.
    starved = evaluate(example_4(NOW - timedelta(hours=2)), Inputs(now=NOW, target_dedicated=6))
    assert starved.error is not None and starved.error.code == INSUFFICIENT_SAMPLE_DATA
    assert starved.error.located.startswith("Line 8, Col ")
    assert "$RunningTasks wanted 50%, received 0%" in starved.error.detail


def test_trend_samples_of_the_docs() -> None:
    series = flat(1, 10)
    result = ok(
        evaluate(
            "$runningTasksSample = $RunningTasks.GetSample(1 * TimeInterval_Minute, 6 * TimeInterval_Minute);"
            "$checked = $RunningTasks.GetSample(60 * TimeInterval_Second, 120 * TimeInterval_Second, 75);"
            "$cpu = $CPUPercent.GetSample(TimeInterval_Minute * 5)",
            Inputs(now=NOW, metrics={"$RunningTasks": series, "$CPUPercent": flat(0.25, 5)}),
        )
    )
    assert result.results.endswith(
        "$checked=[1,1];$cpu=[0.25,0.25,0.25,0.25,0.25,0.25,0.25,0.25,0.25,0.25];"
        "$runningTasksSample=[1,1,1,1,1,1,1,1,1,1]"  # as the docs print it
    )


# ---- the reference, recordings and formulas in the wild ----------------------------------------------


def test_recorded_evaluate_of_a_constant_target() -> None:
    # python/azcli/JS recordings: "$TargetDedicatedNodes=3" → exactly this text.
    result = ok(evaluate("$TargetDedicatedNodes=3", Inputs(now=NOW, target_dedicated=2)))
    assert (
        result.results == "$TargetDedicatedNodes=3;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue"
    )


QUEUE = (  # doAzureParallel's QUEUE formula (maxTasksPerNode 4, dedicated 2..6, low priority 5..10)
    "$samples = $ActiveTasks.GetSamplePercent(TimeInterval_Minute * 15);"
    "$tasks = $samples < 70 ? max(0,$ActiveTasks.GetSample(1)) : "
    "max( $ActiveTasks.GetSample(1), avg($ActiveTasks.GetSample(TimeInterval_Minute * 15)));"
    "$maxTasksPerNode = 4;"
    "$round = $maxTasksPerNode - 1;"
    "$targetVMs = $tasks > 0? (($tasks + $round)/ $maxTasksPerNode) : max(0, $TargetDedicated/2) + 0.5;"
    "$TargetDedicatedNodes = max(2, min($targetVMs, 6));"
    "$TargetLowPriorityNodes = max(5, min($targetVMs, 10));"
    "$NodeDeallocationOption = taskcompletion;"
)


def test_queue_formula_reproduces_a_recorded_service_result() -> None:
    # Azure/doAzureParallel#215 printed the service's evaluateautoscale results for this formula.
    result = ok(evaluate(QUEUE, Inputs(now=NOW, target_dedicated=1, metrics={"$ActiveTasks": flat(0, 15)})))
    assert result.results == (
        "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=5;$NodeDeallocationOption=taskcompletion;"
        "$maxTasksPerNode=4;$round=3;$samples=100;$targetVMs=1;$tasks=0"
    )
    busy = ok(evaluate(QUEUE, Inputs(now=NOW, target_dedicated=1, metrics={"$ActiveTasks": flat(21, 15)})))
    assert (busy.target_dedicated, busy.target_low_priority) == (6, 6)


def test_max_cpu_formula_with_the_old_current_dedicated_name() -> None:
    formula = (
        "$totalNodes = (min($CPUPercent.GetSample(TimeInterval_Minute * 10)) > 0.7) ? "
        "($CurrentDedicated * 1.1) : $CurrentDedicated; $totalNodes = "
        "(avg($CPUPercent.GetSample(TimeInterval_Minute * 60)) < 0.2) ? "
        "($CurrentDedicated * 0.9) : $totalNodes; "
        "$TargetDedicatedNodes = min(10, $totalNodes)"
    )
    busy = ok(evaluate(formula, Inputs(now=NOW, current_dedicated=5, metrics={"$CPUPercent": flat(0.8, 60)})))
    assert busy.target_dedicated == 5  # 5.5 truncates


def test_batch_shipyard_formula_shape() -> None:
    formula = """maxTasksPerNode = 1;
minTargetDedicated = 0;
minTargetLowPriority = 0;
maxTargetDedicated = 16;
maxTargetLowPriority = 0;
sli = TimeInterval_Second * 60;
samplepercent = $PendingTasks.GetSamplePercent(sli);
lastsample = val($PendingTasks.GetSample(1), 0);
samplevecavg = avg($PendingTasks.GetSample(sli));
PendingTaskAvg = samplepercent < 70 ? max(0, lastsample) : (lastsample < samplevecavg ? avg(lastsample, samplevecavg) : max(lastsample, samplevecavg));
reqVMs = PendingTaskAvg / maxTasksPerNode;
preemptcount = 0;
rebalance = 0 == 1;
dedicatedVMs = min(maxTargetDedicated, max(minTargetDedicated, reqVMs));
$TargetDedicatedNodes = dedicatedVMs;
$TargetLowPriorityNodes = max(minTargetLowPriority, min(maxTargetLowPriority, reqVMs - dedicatedVMs));
$NodeDeallocationOption = taskcompletion;"""
    result = ok(evaluate(formula, Inputs(now=NOW, metrics={"$PendingTasks": flat(9, 5)})))
    assert (result.target_dedicated, result.target_low_priority) == (9, 0)
    assert "$rebalance=0;" in result.results
