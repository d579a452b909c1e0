"""Live progress: the meter's plain lines and bar, the engine's per-request ticks (driven the way
vLLM's request loop drives a tqdm bar), the token counter watch, and the engine pass's view of
persisted, cached and live rows. Unit tests; the jobs' own output is checked in
tests/test_e2e_benchmark.py and tests/test_e2e_generate.py."""

from __future__ import annotations

import io
import re
import time

import pyarrow as pa

from aligncultura.console.progress import Meter, duration
from aligncultura.engine.progress import EngineTicks, Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0, 9.6, 75, 3599, 4000)] == ["0s", "10s", "1m15s", "59m59s",
                                                                 "1h06m"]


def test_off_a_terminal_plain_lines_come_every_period_and_once_at_the_end():
    out = io.StringIO()
    m = Meter("scan", 10, unit="pieces", rate_unit="MB/s", every_s=0.3, stream=out)
    for _ in range(4):
        time.sleep(0.2)
        m.add(done=1, amount=2.0)
    m.close()
    m.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 5, lines
    assert all(line.startswith("[scan] ") for line in lines)
    assert lines[-1].startswith("[scan] 4/10 pieces (40%)")
    assert "MB/s" in lines[-1] and "ETA " in lines[-1] and "elapsed" in lines[-1]
    assert "\r" not in out.getvalue()


def test_a_job_that_shows_nothing_yet_still_says_it_is_alive():
    out = io.StringIO()
    m = Meter("generate", 8, every_s=0.4, stream=out)
    time.sleep(1.5)  # nothing finishes: an engine starting
    m.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3, lines
    assert all(re.match(r"\[generate\] 0/8 rows \(0%\), \d+s elapsed$", x) for x in lines), lines


def test_cached_rows_are_shown_apart_and_leave_the_eta_alone():
    out = io.StringIO()
    m = Meter("judge", 100, every_s=100, stream=out)
    m.set(done=50, skipped=50)
    assert m.eta_s() is None  # nothing computed yet: no pace to speak of
    m.set(done=60, amount=300)
    time.sleep(0.3)
    m.set(done=70, amount=600)
    eta = m.eta_s()
    assert eta is not None and eta > 0
    m.close()
    assert "50 cached" in out.getvalue() and "70/100 rows (70%)" in out.getvalue()


def test_on_a_terminal_it_draws_a_bar():
    out = Terminal()
    m = Meter("generate", 4, stream=out)
    m.add(done=2, amount=10)
    m.close()
    text = out.getvalue()
    assert "generate" in text and "\r" in text and "2/4" in text


def drive_like_vllm(use_tqdm, outputs_per_request: list[int]) -> None:
    """What vLLM's `LLM._run_engine` does with a callable `use_tqdm`."""
    list(use_tqdm(["request"] * 3, desc="Adding requests"))  # wrapped iterables pass through
    bar = use_tqdm(total=len(outputs_per_request), desc="Processed prompts",
                   dynamic_ncols=True, postfix="est. speed input: 0.00 toks/s, output: 0.00 toks/s")
    for n in outputs_per_request:
        bar.postfix = f"output: {bar.format_dict['elapsed']:.2f} toks/s"
        bar.update(n)
    bar.refresh()
    bar.close()


def test_engine_ticks_count_each_finished_request_once_all_its_samples_are_in():
    got = []
    ticks = EngineTicks()
    assert ticks.bar("main") is False  # nobody listens: vLLM draws nothing
    ticks.sink = lambda main, side, tokens: got.append((main, side, tokens))
    drive_like_vllm(ticks.bar("main", outputs=2), [2, 2, 2])
    drive_like_vllm(ticks.bar("followup"), [1, 1])
    assert sum(g[0] for g in got) == 3 and sum(g[1] for g in got) == 2


def test_the_token_counter_is_read_while_a_batch_runs():
    got = []
    ticks = EngineTicks()
    ticks.sink = lambda main, side, tokens: got.append(tokens)
    counter = iter(range(0, 10_000, 40))
    with ticks.watch(lambda: next(counter), every_s=0.1):
        time.sleep(0.55)
    assert len(got) >= 4 and sum(got) >= 160, got  # reported during the block, not only after
    with EngineTicks().watch(lambda: None):  # no counter, nobody listening: nothing runs
        pass


class FakeHub:
    """Stands in for the Ray progress hub actor: `add.remote(...)`."""

    def __init__(self):
        self.calls = []
        self.add = self
        self.remote = lambda *a: self.calls.append(a)


def test_replicas_report_to_the_hub_at_most_every_period():
    hub = FakeHub()
    ticks = EngineTicks(hub, every_s=60)
    for _ in range(5):
        ticks.tick("main", 1, 7)
    assert len(hub.calls) == 1  # the first goes at once, the rest wait for the period
    ticks.flush()
    assert [sum(c[i] for c in hub.calls) for i in range(3)] == [5, 0, 35]


def batch(n: int, cached: bool, tokens: int) -> pa.Table:
    return pa.table({"cached": [cached] * n, "output_tokens": [tokens] * n})


def test_an_engine_pass_shows_persisted_cached_and_live_rows():
    p = Progress("generate", 10, enabled=False)
    p.update(4, batch=batch(4, True, 5))  # from the row cache
    assert (p.meter.done, p.meter.skipped, p.meter.amount) == (4, 4, 0)
    p.live(3, 90)  # three finished inside an engine, not persisted yet
    assert (p.meter.done, p.meter.amount) == (7, 90)
    p.update(2, batch=batch(2, False, 20))
    assert p.meter.done == 7  # the live count was ahead: no double counting
    p.update(4, batch=batch(4, False, 20))
    assert (p.meter.done, p.meter.amount) == (10, 120)
    p.live(99, 10)  # a retried pass over-reports: capped at the total
    assert p.meter.done == 10
    p.close()


def test_with_a_followup_a_row_counts_once_its_judging_is_done_too():
    p = Progress("generate + judge", 4, enabled=False, followup=True)
    p.live(4, 200, side=3)  # all generated, 3 of the judge requests finished
    assert p.meter.done == 0 and "4 generated, 3 followup requests done" in p.meter.line()
    p.update(4, batch=batch(4, False, 10))
    assert p.meter.done == 4 and "generated" not in p.meter.line()
    p.close()
