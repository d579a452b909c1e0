"""Stage I on CPU: run `jobs.build_dataset` once and tabulate its per-stage throughput.

    python bench/bench_builder.py --out bench/BUILDER_RESULTS.md [--seeds-limit 16] [-- overrides]

Runs the real job (embedded model in every role, `builder=cpu`, one in-process engine) on the
first N rows of the embedded sample (seeded order), with a fresh row cache so every request is
computed, then writes a markdown report from the run's summary.json: per-stage prompts/s,
requests/s and tokens/s (engine start excluded, reported apart), the accounting, and the class
balance of the built dataset next to the released CulturaX's, computed from
../shared/data/CulturaX.csv when it is present. The machine's load average is recorded because
the development machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CULTURAX = ROOT.parent / "shared" / "data" / "CulturaX.csv"


def released_balance() -> str:
    if not CULTURAX.exists():
        return "n/a (../shared/data/CulturaX.csv not present)"
    from aligncultura.builder.output import balance
    from aligncultura.config import InputConfig
    from aligncultura.data.reader import read_input

    cfg = InputConfig(name="culturax", path=str(CULTURAX), format="csv", encoding="cp1252",
                      text_field="Question", id_field=None, class_field="class")
    b = balance(Counter(read_input(cfg).table.column("class_id").to_pylist()))
    return f"{b['max']}/{b['min']} over {b['present']} subdomains"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=None)
    ap.add_argument("--seeds-limit", type=int, default=16)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_builder_"))
    cmd = [sys.executable, "-m", "jobs.build_dataset", f"run_dir={tmp / 'run'}",
           f"cache_dir={tmp / 'cache'}", f"seeds.limit={args.seeds_limit}", "wandb.mode=disabled",
           *args.overrides]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    log = tmp / "job.log"
    print(f"running: {' '.join(cmd)}\nlog: {log}", flush=True)
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd="/tmp", stdout=fh, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    if proc.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        return proc.returncode
    s = json.loads((tmp / "run" / "summary.json").read_text())
    acc, b = s["accounting"], s["balance"]["built"]
    lines = [
        "# Stage I builder on CPU (embedded SmolLM2-135M in every role)", "",
        f"Command: `{' '.join(['python -m jobs.build_dataset', *cmd[3:]])}`  ",
        f"Job wall time {wall:.0f} s; load average {load0[0]:.1f} at start, {load1[0]:.1f} at "
        f"end (2 cores, shared with other engines: absolute numbers vary by 2-5x).", "",
        "| stage | prompts | requests | in tok | out tok | wall s | engine start s | prompts/s "
        "| requests/s | out tok/s | in tok/s |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x, d=2):
        return "n/a" if x is None else f"{x:.{d}f}"

    for name, st in s["stages"].items():
        lines.append(f"| {name} | {st['prompts']} | {st['requests']} | {st['input_tokens']} | "
                     f"{st['output_tokens']} | {f(st['wall_s'], 1)} | {f(st['engine_start_s'], 1)} "
                     f"| {f(st['prompts_s'])} | {f(st['requests_s'])} | {f(st['output_tok_s'])} | "
                     f"{f(st['input_tok_s'])} |")
    seed, gen = acc["seed"], acc["generated"]
    lines += ["", f"Accounting: seed rows {seed['read']} read = kept {seed['kept']}, duplicate "
              f"{seed['duplicate']}, rejected {seed['rejected']}, quarantined {seed['quarantined']},"
              f" not selected {seed['not_selected']}; generated {gen['requested']} = kept "
              f"{gen['kept']}, duplicate {gen['duplicate']}, rejected {gen['rejected']} "
              f"({gen['reasons']}).",
              f"Responses: {s['respond']['rounds']}.",
              f"Class balance (max/min over subdomains present, None excluded): built "
              f"{b['max']}/{b['min']} over {b['present']} subdomains; released CulturaX "
              f"{released_balance()}.",
              f"Leakage: {s['leakage']['flagged']}/{s['leakage']['n']} "
              f"(95% CI {s['leakage']['ci95']})."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
