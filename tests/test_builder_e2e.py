"""Stage I end to end on CPU: `python -m jobs.build_dataset` with the embedded model in every role
(one engine start, in process), real vLLM, real SimHash dedup, real W&B offline files.

The seed pool holds 8 sample prompts, a near-duplicate of one of them, an unusable row and one
prompt that duplicates a reference corpus row, so every terminal state occurs. The embedded
135M model's yes-probabilities sit around 0.3-0.55 for every subdomain, so this test lowers
classify.delta to 0.3 to let generated prompts through the target check; the labels it yields
prove the plumbing, not their quality.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from aligncultura.builder.dedup import fingerprints
from aligncultura.builder.schema import DATASET_SCHEMA, STATES
from aligncultura.data import taxonomy
from aligncultura.data.reader import sample_path
from tests.conftest import ROOT, culturax_csv, run_job

SEED_IDS = ["sample-003", "sample-004", "sample-015", "sample-017", "sample-025", "sample-027",
            "sample-036", "sample-053"]
DELTA = 0.3


def _write_inputs(tmp):
    rows = {r["id"]: r for r in map(json.loads, sample_path().read_text().splitlines())}
    seeds = [{"id": i, "question": rows[i]["question"], "class_id": rows[i]["class_id"]}
             for i in SEED_IDS]
    seeds.insert(4, {"id": "near-dup", "class_id": 11, "question":
                     "What is injera, and how is it traditionally eaten in Ethiopia today?"})
    seeds.append({"id": "blank", "question": "   ", "class_id": 11})
    (tmp / "seeds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seeds))
    refs = [{"id": "r1", "question": "Where did flamenco come from?"},
            {"id": "r2", "question": "How do I brew Turkish coffee at home?"}]
    (tmp / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    _write_inputs(tmp)
    run_dir = tmp / "run"
    args = [f"seeds.path={tmp / 'seeds.jsonl'}", "seeds.topic_field=null", f"run_dir={run_dir}",
            f"cache_dir={tmp / 'cache'}", "builder=cpu",
            f"dedup.references=[{{name:refs,path:{tmp / 'refs.jsonl'},class_field:null}}]",
            f"classify.delta={DELTA}", "classify.shortlist_size=2",
            "expand.subdomains=[2,11]", "expand.min_per_subdomain=3", "expand.max_rounds=1",
            "expand.oversample=1.0", "expand.max_tokens=48",
            "respond.k=2", "respond.max_tokens=32", "respond.critic_max_tokens=96",
            "respond.critique_max_chars=60",
            "wandb.group=tests"]
    proc = run_job("build_dataset", *args)
    if proc.returncode != 0:
        pytest.fail(f"build failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return run_dir, proc, args


def test_accounting_every_row_has_one_terminal_state(build):
    run_dir, proc, _ = build
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = summary["accounting"]
    seed, gen = acc["seed"], acc["generated"]
    assert seed["read"] == 10 and seed["quarantined"] == 1 and seed["not_selected"] == 0
    assert sum(seed[s] for s in STATES) == 10
    assert gen["requested"] == sum(gen[s] for s in STATES) and gen["requested"] > 0
    states = pq.read_table(run_dir / "row_states.parquet").to_pylist()
    assert len(states) == 10 + gen["requested"] and {s["state"] for s in states} <= set(STATES)
    assert len({s["row_id"] for s in states}) == len(states)
    by_id = {s["row_id"]: s for s in states}
    assert by_id["near-dup"]["state"] == "duplicate"
    assert by_id["near-dup"]["duplicate_of"] == "sample-015"
    assert by_id["sample-036"]["state"] == "duplicate" and by_id["sample-036"]["duplicate_of"] == "r1"
    assert any(s["state"] == "quarantined" and "empty" in s["reason"] for s in states)
    assert all(s["reason"] for s in states if s["state"] in ("rejected", "quarantined"))
    assert f"seed rows: 10 read = kept {seed['kept']}" in proc.stdout
    assert f"generated prompts: {gen['requested']} requested" in proc.stdout
    pool = pq.read_table(run_dir / "pool.parquet").to_pylist()
    dup = next(p for p in pool if p["prompt_id"] == "sample-036")
    assert dup["duplicate_in"] == "refs" and dup["duplicate_hamming"] <= 10
    assert all(p["raw_generation"] is not None for p in pool if p["origin"] == "generated")


def test_dataset_rows_labels_and_schema(build):
    run_dir, _, _ = build
    table = pq.read_table(run_dir / "dataset" / "data.parquet")
    assert table.schema.equals(DATASET_SCHEMA)
    rows = table.to_pylist()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(rows) == summary["accounting"]["seed"]["kept"] + summary["accounting"]["generated"]["kept"]
    assert len(rows) >= 3
    fps = fingerprints([r["question"] for r in rows])[0]
    for r, fp in zip(rows, fps.tolist(), strict=True):
        assert taxonomy.is_valid_id(r["primary_id"])
        for lab in r["labels"]:
            assert 0 <= lab["id"] < taxonomy.NONE_ID and lab["p"] >= DELTA
            assert lab["name"] == taxonomy.name_of(lab["id"])
        if r["origin"] == "seed":  # the most probable passing label, or None (41)
            assert r["primary_id"] == (r["labels"][0]["id"] if r["labels"] else 41)
        else:
            assert r["generation"]["target_id"] == r["primary_id"] in (2, 11)
            assert r["primary_id"] in [lab["id"] for lab in r["labels"]]
        assert r["subdomain"] == taxonomy.name_of(r["primary_id"])
        assert r["domain"] == taxonomy.domain_of(r["primary_id"])
        assert r["hhh_pass"] == [1, 1, 1] and r["response"]
        assert r["critiques"] and 0 <= r["response_round"] <= 2
        assert r["simhash"] == fp
        assert r["models"] == {"classifier": "smollm2_135m", "generator": "smollm2_135m",
                               "critic": "smollm2_135m"}
        assert r["prompt_versions"]["critic"].startswith("critic-v")
    assert {r["split"] for r in rows} <= {"train", "val", "test"}
    # the response candidates and the rejected prompts are kept with their critiques
    cands = pq.read_table(run_dir / "candidates.parquet").to_pylist()
    assert max(c["round"] for c in cands) <= 2
    rejected = pq.read_table(run_dir / "rejected.parquet").to_pylist()
    for r in rejected:
        if r["reason"].startswith("no_passing_response"):
            assert len(r["critiques"]) == 2 * 3  # K=2 candidates x (1 + 2 feedback rounds)


def test_split_proportions_and_leakage(build):
    run_dir, _, _ = build
    s = json.loads((run_dir / "summary.json").read_text())
    rows = pq.read_table(run_dir / "dataset" / "data.parquet").to_pylist()
    by = Counter((r["primary_id"], r["split"]) for r in rows)
    for label, st in s["split"]["strata"].items():
        n = st["n"]
        assert n == sum(by[(int(label), k)] for k in ("train", "val", "test"))
        if n >= 5:
            assert abs(st["train"] - 0.8 * n) <= 1 and abs(st["val"] - 0.1 * n) <= 1
        else:
            assert st["train"] == n
    leak = s["leakage"]
    assert leak["n"] == sum(r["split"] != "train" for r in rows)
    if leak["n"]:
        lo, hi = leak["ci95"]
        assert leak["rate"] == leak["flagged"] / leak["n"] and lo <= leak["rate"] <= hi
    assert leak["target"] == 0.003


def test_card_stages_balance_and_one_engine_start(build):
    run_dir, proc, _ = build
    s = json.loads((run_dir / "summary.json").read_text())
    card = (run_dir / "dataset" / "README.md").read_text()
    for part in ("## Counts per subdomain", "## Class balance", "## Deduplication",
                 "## Responses", "## Split and leakage", "95% Wilson CI", "smollm2_135m",
                 "| 11 | Culinary Arts |", "generator and critic are the same model"):
        assert part in card, part
    assert "warning: generator and critic are the same model" in proc.stdout
    stages = s["stages"]
    for name in ("classify.shortlist", "classify.verify", "expand.generate", "respond.generate",
                 "respond.critic", "dedup", "split_leakage"):
        assert stages[name]["prompts"] > 0 and stages[name]["prompts_s"] > 0, name
    for name in ("classify.verify", "expand.generate", "respond.generate", "respond.critic"):
        assert stages[name]["output_tok_s"] > 0 and stages[name]["computed"] > 0
    assert sum(st["engine_start_s"] > 0 for st in stages.values()) == 1  # one engine, all roles
    assert s["balance"]["seed_input"]["present"] >= 4
    assert s["wandb"]["status"] == "ok" and s["wandb"]["mode"] == "offline"
    from aligncultura.tracking import read_offline_summary

    logged = read_offline_summary(s["wandb"]["dir"])
    assert {"name": "culturax_built", "type": "build_dataset"} in [
        {k: a[k] for k in ("name", "type")} for a in logged["artifacts"]]
    assert logged["summary"]["accounting/seed/read"] == 10


def test_rerun_is_served_from_the_cache_without_an_engine(build):
    run_dir, _, args = build
    before = pq.read_table(run_dir / "dataset" / "data.parquet")
    proc = run_job("build_dataset", *args, "wandb.mode=disabled")
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads((run_dir / "summary.json").read_text())
    assert all(st["computed"] == 0 and st["engine_start_s"] == 0 for st in s["stages"].values())
    after = pq.read_table(run_dir / "dataset" / "data.parquet")
    assert after.equals(before)


def test_culturax_seeds_dry_run(capsys):
    """`seeds=culturax` reads the released CSV through the data contract (no engine)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import aligncultura.builder.config  # noqa: F401  (registers the schema)
    from aligncultura.builder.pipeline import build

    csv = culturax_csv()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("build_dataset", overrides=["seeds=culturax", f"seeds.path={csv}",
                                                  "dry_run=true"])
    GlobalHydra.instance().clear()
    result = build(cfg)
    assert result["dry_run"] and result["seeds"]["read"] == 1500
    assert "plan: 1500 seed prompts (read 1500, quarantined 0)" in capsys.readouterr().out
    # the card's reference figure is the released file's own balance
    from aligncultura.builder.card import RELEASED_CULTURAX_BALANCE
    from aligncultura.builder.output import balance
    from aligncultura.data.reader import load_prompts

    b = balance(Counter(load_prompts(cfg.seeds).table.column("class_id").to_pylist()))
    assert (b["max"], b["min"]) == RELEASED_CULTURAX_BALANCE


def test_bad_settings_are_one_line_errors(tmp_path):
    proc = run_job("build_dataset", "classify.delta=0", f"run_dir={tmp_path}", "dry_run=true")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: classify.delta=0.0")
