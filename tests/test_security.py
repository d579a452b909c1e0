"""Security: planted keys never reach files, logs or W&B; no remote code by default; a local Ray
listens on loopback only; input data is never unpickled or evaluated."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_job

KEY = "sk-test-PLANTED1234567890abcdef"  # what an OpenAI key looks like
TOKEN = "hf_PLANTEDtoken1234567890"  # a Hugging Face token
WANDB_KEY = "f00dfacef00dfacef00dfacef00dfacef00dface"  # a W&B key: 40 hex digits
PLANTED = (KEY, TOKEN, WANDB_KEY)


def _leaks(blob: bytes) -> list[str]:
    return [p for p in PLANTED if p.encode() in blob]


@pytest.mark.slow  # uses the session benchmark (one engine start)
def test_planted_keys_never_written_or_printed(quickstart_benchmark, tmp_path):
    """Keys in the environment, a key pulled into the config by interpolation, and a token typed
    on the command line: none appears in config.yaml, manifest.json, summary, metrics, Hydra's
    own files, the W&B run, any other file of the run dir, stdout or stderr. The run is fully
    cached (the session benchmark's rows), so no engine starts."""
    ref_dir, _ = quickstart_benchmark
    rd = tmp_path / "run"
    proc = run_job(
        "benchmark", "experiment=quickstart", "dataset.limit=4", "generation.max_tokens=32",
        f"cache_dir={ref_dir.parent / 'cache'}", f"hydra.run.dir={rd}",  # Hydra's dir = run dir
        "wandb.entity=${oc.env:OPENAI_API_KEY}", f"wandb.group={TOKEN}",
        "judge.model.api.api_key_env=OPENAI_API_KEY",
        env={"OPENAI_API_KEY": KEY, "HF_TOKEN": TOKEN, "WANDB_API_KEY": WANDB_KEY},
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 24 rows cached: no engine started" in proc.stdout
    assert not _leaks(proc.stdout.encode()) and not _leaks(proc.stderr.encode())
    files = [p for p in rd.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "manifest.json", "summary.json", "metrics.json"} <= names
    assert any(p.suffix == ".wandb" for p in files), "no W&B run to check"
    assert any(p.parent.name == ".hydra" for p in files), "no Hydra files to check"
    leaked = {str(p.relative_to(rd)): _leaks(p.read_bytes()) for p in files}
    assert not {k: v for k, v in leaked.items() if v}, leaked
    cfg = (rd / "config.yaml").read_text()
    assert "api_key_env: OPENAI_API_KEY" in cfg  # the variable's name is kept, not its value
    assert "entity: '***'" in cfg or "entity: ***" in cfg


def test_rejected_override_does_not_echo_a_key(tmp_path):
    """A key typed into a key the schema does not have is refused in one line, masked."""
    proc = run_job("generate", "dry_run=true", f"model.api_key={KEY}", f"run_dir={tmp_path}/r")
    assert proc.returncode == 2
    assert "model.api_key" in proc.stderr and "Traceback" not in proc.stderr
    assert not _leaks(proc.stderr.encode() + proc.stdout.encode()), proc.stderr


def test_trust_remote_code_only_where_a_preset_sets_it():
    """Off by default; only a model preset that says so turns it on, and only then does the
    engine get it."""
    from hydra import compose, initialize_config_dir

    import aligncultura.config  # noqa: F401  (registers the schemas)
    from aligncultura.engine.models import ResolvedModel
    from aligncultura.engine.runner import _stage_kwargs

    presets = sorted((ROOT / "conf/model").glob("*.yaml"))
    assert presets
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        for preset in presets:
            cfg = compose("generate", overrides=[f"model={preset.stem}"])
            says = "trust_remote_code: true" in preset.read_text()
            assert bool(cfg.model.trust_remote_code) == says, preset.name
            model = ResolvedModel("m", "/x", None, None, None, "local", "fp")
            kwargs = _stage_kwargs(model, cfg.model, cfg.engine)["engine_kwargs"]
            assert kwargs.get("trust_remote_code", False) == says, preset.name


def test_local_ray_listens_on_loopback_only():
    """The local Ray a job starts (no RAY_ADDRESS): every listening socket of the driver and of
    every Ray process it started (GCS, raylet, workers, agents, the dashboard's head process
    if Ray runs one) is on loopback."""
    code = """
import json, psutil
from aligncultura.cluster.ray_session import init_ray
init_ray()
me = psutil.Process()
pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
out = []
for c in psutil.net_connections(kind="inet"):
    if c.status == psutil.CONN_LISTEN and c.pid in pids:
        out.append([psutil.Process(c.pid).name(), c.laddr.ip, c.laddr.port])
print("LISTEN " + json.dumps(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd="/tmp", env={**env, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LISTEN "))
    listening = json.loads(line[len("LISTEN "):])
    assert listening, "no Ray server found"
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    assert all(ip in loopback for _, ip, _ in listening), listening


class _Boom:
    """Unpickling this touches a marker file: it must never happen to input data."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_input_is_never_unpickled_or_evaluated(tmp_path):
    """A Parquet input whose column claims a pickled Python extension type, and JSONL/CSV
    inputs whose text is Python code: reading them runs nothing."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(str(marker)))
    field = pa.field("question", pa.binary(), metadata={
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": payload})
    table = pa.table({"id": ["a", "b"], "question": pa.array([b"q1?", b"q2?"])},
                     schema=pa.schema([("id", pa.string()), field]),
                     ).replace_schema_metadata({b"pandas": payload})
    pq.write_table(table, tmp_path / "evil.parquet")
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    (tmp_path / "evil.jsonl").write_text(json.dumps({"id": "c", "question": code}) + "\n")
    (tmp_path / "evil.csv").write_text(f'id,question\nd,"{code}"\n')
    for name in ("evil.parquet", "evil.jsonl", "evil.csv"):
        proc = run_job("generate", "dry_run=true", f"dataset.path={tmp_path / name}",
                       "dataset.class_field=null", "dataset.topic_field=null",
                       "dataset.helpful_field=null", "dataset.harmless_field=null",
                       "dataset.honest_field=null")
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert not marker.exists(), f"{name} ran code"
    assert pickle.loads(payload) is None and marker.exists()  # the payload was live
    marker.unlink()


# files that unpickle what our own jobs wrote, never input data
TRUSTED_PICKLES = {"aligncultura/cluster/sweep_status.py": "submitit's own submission/result pickles"}


@pytest.mark.parametrize("module", ["aligncultura", "jobs"])
def test_no_pickle_or_eval_in_the_package(module):
    """Our own code never unpickles or evaluates anything (the readers above are the path
    input takes; this keeps it that way)."""
    bad = ("pickle.load", "eval(", "exec(", "yaml.load(", "yaml.unsafe_load", "torch.load(",
           "allow_pickle=True", "read_pickle", "marshal.load", "shelve.")
    for path in (ROOT / module).rglob("*.py"):
        if str(path.relative_to(ROOT)) in TRUSTED_PICKLES:
            continue
        text = path.read_text()
        hits = [b for b in bad if b in text]
        assert not hits, f"{path}: {hits}"
