"""Cost of one autoscale formula evaluation (µs), for the docs' typical task-based formula.

Run: PYTHONPATH=src python bench/autoscale_eval.py [iterations]
Prints compile cost once and the per-evaluation cost with a full 15-minute $PendingTasks history.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from batchyard.autoscale import Inputs, Series, compile_formula, evaluate

# Example 2 of the Azure docs ("Task-based adjustment"), the formula most pools start from.
FORMULA = """// Get pending tasks for the past 15 minutes.
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


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    now = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    # The service keeps far more history than a formula reads; give it a day of 30 s samples.
    history = Series.of((now - timedelta(seconds=30 * i), float(i % 13)) for i in range(2880))
    inputs = Inputs(now=now, target_dedicated=4, current_dedicated=4, metrics={"$PendingTasks": history})

    result = compile_formula(FORMULA).evaluate(inputs)
    assert result.error is None and result.target_dedicated == 5, result
    program = compile_formula(FORMULA)

    def best_us(fn: Callable[[], object], number: int) -> float:
        """Best of five runs: the machine is shared, the minimum is the cost without interference."""
        return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6

    compile_us = best_us(lambda: compile_formula(FORMULA), 1000)
    eval_us = best_us(lambda: program.evaluate(inputs), iterations)
    once_us = best_us(lambda: evaluate(FORMULA, inputs), 1000)

    print(f"compile (parse + closures): {compile_us:.1f} us")
    print(f"evaluate compiled formula:  {eval_us:.1f} us per evaluation (best of 5 x {iterations})")
    print(f"parse + evaluate each time: {once_us:.1f} us per evaluation")
    print(f"results: {result.results}")


if __name__ == "__main__":
    main()
