"""What an engine pass reports: live progress (`Progress`, fed by persisted batches and by the
engines' own ticks, `EngineTicks`), and its efficiency figures (throughput, latency, engine
start, CPU and GPU seconds, peak memory) from its completion rows."""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.console.progress import Meter


class Progress:
    """An engine pass's live progress (a `Meter`): rows persisted as their batches arrive, and
    between batches the requests the engines report finished (`live`, from `LLMStage`'s ticks),
    so a batch of 64 rows moves the bar 64 times, not once. Rows served from the row cache are
    shown apart and left out of the rate and the ETA. With a followup (judging in the same
    pass), a row counts once its batch is persisted, the followup done; until then the line
    says how many were generated and how many followup requests finished."""

    def __init__(self, label: str, total: int, enabled: bool = True, followup: bool = False):
        self.meter = Meter(label, total, unit="rows", rate_unit="out tok/s", enabled=enabled)
        self.followup = followup
        self.live_side = 0
        self.persisted = 0
        self.cached = 0
        self.tokens = 0
        self.live_rows = 0
        self.live_tokens = 0

    def update(self, rows: int, tokens: int = 0, batch: pa.Table | None = None) -> None:
        """`rows` more persisted; the rate counts `tokens` plus the output tokens of the rows of
        `batch` this run computed (rows served from the row cache are counted apart)."""
        if batch is not None:
            hit = pc.fill_null(batch.column("cached"), False)
            live = batch.filter(pc.invert(hit))
            tokens += sum(live.column("output_tokens").to_pylist())
            self.cached += min(rows, batch.num_rows - live.num_rows)
        self.persisted += rows
        self.tokens += tokens
        self._push()

    def live(self, rows: int, tokens: int, side: int = 0) -> None:
        """What the engines of this pass report so far (totals): main requests finished,
        output tokens produced (followup requests' tokens included), followup requests
        finished."""
        self.live_rows, self.live_tokens, self.live_side = rows, tokens, side
        self._push()

    def _push(self) -> None:
        computed = self.persisted - self.cached
        note = None
        if self.followup:
            note = f"{self.live_rows} generated, {self.live_side} followup requests done" \
                if self.live_rows > computed else ""
        else:
            computed = max(computed, self.live_rows)
        self.meter.set(done=self.cached + computed, amount=max(self.tokens, self.live_tokens),
                       skipped=self.cached, note=note)

    def close(self) -> None:
        self.meter.close()

    def tick(self, main: int, side: int, tokens: int) -> None:
        """Increments from an engine in this process (executor=local): `main` requests of this
        pass finished, `side` followup requests, `tokens` output tokens."""
        self.live(self.live_rows + main, self.live_tokens + tokens, self.live_side + side)


class EngineBar:
    """The stand-in vLLM drives when `LLM.chat/generate/classify` get ``use_tqdm=<callable>``:
    its request loop (`LLM._run_engine`) builds the bar with ``total=``, reads
    ``format_dict["elapsed"]`` and sets ``postfix`` (its speed estimates), then calls
    ``update(n)`` for each finished request, `n` being its number of samples (``outputs`` per
    request: the request counts once all are in)."""

    def __init__(self, report: Callable[[str, int, int], None], kind: str, outputs: int = 1,
                 total: int = 0, **_: object):
        self.report, self.kind, self.outputs, self.total = report, kind, max(outputs, 1), total
        self.n = 0
        self.postfix = ""
        self.t0 = time.perf_counter()

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(time.perf_counter() - self.t0, 1e-9)}

    def update(self, n: int = 1) -> None:
        before = self.n // self.outputs
        self.n += n
        self.report(self.kind, self.n // self.outputs - before, 0)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class EngineTicks:
    """An engine's finished requests (``main`` and followup) and output tokens, passed on as
    they happen: to `sink` (a callable in this process, executor=local) or to a progress hub
    actor (`hub_actor`, on Ray) at most every `every_s` seconds and at `flush`.

    Requests often finish together at the end of a batch (they run side by side), so `watch`
    also reads the engine's own output-token counter every second while a batch runs: the
    token rate moves from the first decoding step on."""

    def __init__(self, hub: object = None, every_s: float = 0.5):
        self.hub, self.every_s = hub, every_s
        self.sink: Callable[[int, int, int], None] | None = None
        self.pending = [0, 0, 0]
        self.last = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.hub is not None or self.sink is not None

    def bar(self, kind: str, outputs: int = 1) -> Callable[..., EngineBar] | bool:
        """vLLM's ``use_tqdm`` argument for requests of `outputs` samples each: a bar factory
        when someone listens, else False."""
        if not self.enabled:
            return False

        def factory(iterable: Any = None, **kw: Any) -> Any:
            # vLLM also wraps its request adding and rendering loops (an iterable, no total):
            # those pass through uncounted; only finished requests move the bar
            return iterable if iterable is not None else EngineBar(self.tick, kind, outputs, **kw)

        return factory

    def tick(self, kind: str, n: int, tokens: int) -> None:
        with self._lock:
            self.pending[0 if kind == "main" else 1] += n
            self.pending[2] += tokens
            due = self.sink is not None or time.perf_counter() - self.last >= self.every_s
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if not any(self.pending):
                return
            main, side, tokens = self.pending
            self.pending = [0, 0, 0]
            self.last = time.perf_counter()
        if self.sink is not None:
            self.sink(main, side, tokens)
        elif self.hub is not None:
            try:
                self.hub.add.remote(main, side, tokens)  # fire and forget
            except Exception:  # noqa: BLE001 - the driver is gone: progress is not the job
                self.hub = None

    @contextlib.contextmanager
    def watch(self, read_tokens: Callable[[], int | None], every_s: float = 1.0):
        """While the block runs, report the growth of `read_tokens()` (an engine's output-token
        counter; None when it has none) every `every_s` seconds, from a thread."""
        if not self.enabled or read_tokens() is None:
            yield
            return
        stop = threading.Event()
        seen = [read_tokens() or 0]

        def report() -> None:
            now = read_tokens()
            if now is not None and now > seen[0]:
                self.tick("main", 0, now - seen[0])
                seen[0] = now

        def loop() -> None:
            while not stop.wait(every_s):
                report()

        thread = threading.Thread(target=loop, name="engine-tokens", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            report()
            self.flush()


def hub_actor() -> object:
    """A Ray actor (no CPU) that sums what the replicas of a pass report (`EngineTicks`)."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class ProgressHub:
        def __init__(self) -> None:
            self.totals = [0, 0, 0]

        def add(self, main: int, side: int, tokens: int) -> None:
            self.totals = [self.totals[0] + main, self.totals[1] + side, self.totals[2] + tokens]

        def get(self) -> list[int]:
            return self.totals

    return ProgressHub.remote()


class HubPoller:
    """A driver thread reading a progress hub every `every_s` seconds into `progress.live`."""

    def __init__(self, hub: object, progress: Progress, every_s: float = 1.0):
        self.hub, self.progress, self.every_s = hub, progress, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-hub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import ray

        while not self._stop.wait(self.every_s):
            try:
                main, side, tokens = ray.get(self.hub.get.remote(), timeout=5)
            except Exception:  # noqa: BLE001 - a slow or lost hub only delays the bar
                continue
            self.progress.live(main, tokens, side)

    def stop(self) -> None:
        import ray

        self._stop.set()
        self._thread.join(timeout=10)
        try:
            ray.kill(self.hub)
        except Exception:  # noqa: BLE001 - already gone with its node
            pass


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def efficiency(completions: pa.Table, wall_s: float, num_gpus: float = 0.0,
               replicas: int = 1) -> dict[str, Any]:
    """Throughput and cost of one engine stage from its completion rows.

    Engine start is reported apart and excluded from the throughput (the replicas start
    in parallel, so the largest start time is subtracted from the stage's wall time).
    """
    n_cached = int(pc.sum(completions.column("cached")).as_py() or 0) if completions.num_rows else 0
    if n_cached:  # rows served from the cache cost nothing in this run
        completions = completions.filter(pc.invert(pc.fill_null(completions.column("cached"), False)))
    ok = completions.filter(pc.equal(completions.column("status"), "ok")) \
        if completions.num_rows else completions
    out_tok = int(np.sum(ok.column("output_tokens").to_numpy(zero_copy_only=False))) if ok.num_rows else 0
    in_tok = int(np.sum(ok.column("input_tokens").to_numpy(zero_copy_only=False))) if ok.num_rows else 0
    lat = [x for x in completions.column("latency_s").to_pylist() if x is not None] \
        if completions.num_rows else []
    starts = [x for x in completions.column("engine_start_s").to_pylist() if x is not None] \
        if completions.num_rows else []
    engine_start = max(starts) if starts else 0.0
    steady = max(wall_s - engine_start, 1e-9) if completions.num_rows else 0.0
    cpu = float(np.nansum(completions.column("cpu_s").to_numpy(zero_copy_only=False))) \
        if completions.num_rows else 0.0
    rss = completions.column("peak_rss_mb").to_pylist() if completions.num_rows else []
    n = max(completions.num_rows, 1)
    return {
        "by_replica": by_replica(completions),
        "requests": completions.num_rows,
        "cached_requests": n_cached,
        "output_tokens": out_tok,
        "input_tokens": in_tok,
        "output_tok_s": out_tok / steady if steady else None,
        "input_tok_s": in_tok / steady if steady else None,
        "requests_s": completions.num_rows / steady if steady else None,
        "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
        "latency_p95_s": float(np.percentile(lat, 95)) if lat else None,
        "engine_start_s": engine_start,
        "wall_s": wall_s,
        "steady_s": steady,
        "cpu_s": cpu,
        "cpu_s_per_100": 100.0 * cpu / n,
        "gpu_s": num_gpus * replicas * steady,
        "gpu_s_per_100": 100.0 * num_gpus * replicas * steady / n,
        "output_tokens_per_response": out_tok / max(ok.num_rows, 1),
        "peak_rss_mb": max([peak_rss_mb(), *[r for r in rss if r is not None]]),
    }


def by_replica(completions: pa.Table) -> dict[str, dict[str, Any]]:
    """Per engine replica ("<node>/<pid>") of the rows computed in this run: its node, rows,
    output tokens and busy seconds (its engine calls' wall time)."""
    out: dict[str, dict[str, Any]] = {}
    if not completions.num_rows or "replica" not in completions.column_names:
        return out
    for r in completions.select(["replica", "output_tokens", "busy_s", "cached"]).to_pylist():
        if r["cached"] or not r["replica"]:
            continue
        e = out.setdefault(r["replica"], {"node": r["replica"].rsplit("/", 1)[0], "rows": 0,
                                          "output_tokens": 0, "busy_s": 0.0})
        e["rows"] += 1
        e["output_tokens"] += int(r["output_tokens"] or 0)
        e["busy_s"] += float(r["busy_s"] or 0.0)
    return dict(sorted(out.items()))
