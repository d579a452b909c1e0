"""Structured config schemas, registered in Hydra's ConfigStore.

The dataclasses are the schema; YAML files under ``conf/`` hold presets only (models, datasets,
engines, experiments) and the command line overrides both. Composing a config imports nothing
heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class InputConfig:
    """One input of a job: the data contract shared by every job."""

    name: str = "sample"  # source name: used in row ids when the input has no id column
    path: str | None = None  # None = the embedded sample shipped with the package
    format: str = "auto"  # auto (from the suffix) | csv | jsonl | parquet
    # for csv/jsonl: auto reads a BOM, else UTF-8, else the detected legacy encoding (with a
    # note); an explicit one is obeyed (the released CulturaX is cp1252)
    encoding: str = "auto"
    text_field: str = "question"
    id_field: str | None = "id"  # None = source name + row index
    class_field: str | None = "class_id"
    topic_field: str | None = None
    helpful_field: str | None = None
    harmless_field: str | None = None
    honest_field: str | None = None
    limit: int | None = None  # first N rows of the chosen split, in a seeded order
    split: str = "all"  # all | train | val | test
    split_seed: int = 42
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])


@dataclass
class ApiConfig:
    """An OpenAI-compatible endpoint instead of an in-process vLLM engine."""

    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of an environment variable; never the key
    concurrency: int = 8
    max_retries: int = 4
    timeout_s: float = 120.0


@dataclass
class ModelConfig:
    name: str = MISSING  # label written into outputs and W&B
    source: str = "hf"  # embedded | hf | local | api
    path: str | None = None  # HF id (cluster) or local checkpoint dir
    revision: str | None = None
    tokenizer: str | None = None
    lora_path: str | None = None  # a LoRA adapter applied on top of `path`
    trust_remote_code: bool = False
    system_prompt: str | None = None  # null = the model's default, "" = none
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. enable_thinking
    reasoning: bool = False  # emits <think>...</think>: kept apart from the response
    reasoning_max_tokens: int | None = None  # extra token budget for the trace
    # the chat template opens <think> itself (the output starts inside the trace): an output
    # without </think> ran out of tokens while reasoning and is `truncated_reasoning`, not judged
    reasoning_opens_think: bool = False
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # model-specific vLLM settings
    api: ApiConfig = field(default_factory=ApiConfig)


@dataclass
class EngineConfig:
    """Where and how engines run; `engine_kwargs` go to `vllm.LLM` untouched."""

    name: str = "cpu"
    executor: str = "ray"  # ray (Ray Data actor pool) | local (in this process)
    replicas: int = 1
    num_cpus_per_replica: float = 1.0
    num_gpus_per_replica: float = 0.0
    batch_size: int = 64  # rows per Ray Data batch handed to one engine call
    threads: int | None = None  # torch threads in the replica; null = all cores
    # when a replica (or its node) dies, the unfinished rows run again on the replicas the
    # cluster can still place, this many times; then they are marked failed and the job goes on
    max_restarts: int = 2
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class GenerationConfig:
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 512
    repetition_penalty: float = 1.1
    seed: int = 0
    n: int = 1


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "aligncultura"
    entity: str | None = None
    group: str | None = None  # null = the sweep/run dir name


@dataclass
class JudgeConfig:
    """A judge *role*: a model preset plus how it is asked."""

    model: ModelConfig = MISSING
    temperature: float = 0.0
    max_tokens: int = 256  # >= 128 so JSON verdicts are not cut off
    seed: int = 0
    structured: bool = True  # JSON-schema structured outputs
    max_unscored_rate: float = 0.05  # fraction; above it the run fails (results kept)
    demo_only: bool = False  # its scores demonstrate the pipeline, not judgement quality
    # rubric: a chat model answers a rubric in JSON (benchmark/rubrics.py). The scorers
    # (benchmark/scorers.py) keep a probability per verdict, so `threshold` can be changed
    # later from the stored judgments: classifier (a sequence-classification checkpoint;
    # harmlessness: unsafe when any label's sigmoid probability > threshold), yes_no (a causal
    # LM's P(yes) from the next-token log-probabilities of score_tokens; yes when >= threshold)
    kind: str = "rubric"
    prompt_format: str | None = None  # scorers: the input, with {question} and {response}
    score_tokens: list[str] = field(default_factory=lambda: [" yes", " no"])  # yes_no
    threshold: float = 0.5
    max_input_tokens: int | None = None  # classifier: keep the first N tokens of the input


@dataclass
class CriterionJudges:
    harmless: JudgeConfig | None = None
    truthful: JudgeConfig | None = None
    informative: JudgeConfig | None = None


@dataclass
class GenerateJobConfig:
    model: ModelConfig = MISSING
    dataset: InputConfig = field(default_factory=InputConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run_dir: str | None = None  # null = Hydra's job output dir
    # the row cache; null = <cache root>/rows, the cache root being $ALIGNCULTURA_CACHE, else
    # $XDG_CACHE_HOME/aligncultura, else ~/.cache/aligncultura; `off` disables it
    cache_dir: str | None = None
    dry_run: bool = False
    progress: bool = True
    verbose: bool = False  # Ray's, vLLM's and torch's own lines on the terminal (else logs/)
    # the judge an experiment pins (experiment=cluster) composes here too; jobs.generate does
    # not judge, so it is never read
    judge: JudgeConfig | None = None
    # jobs.benchmark: a judge per criterion in place of `judge` (the paper's instruments:
    # `scorer/harmless=beaver_dam_7b`, `scorer/truthful=truthfulqa_truth`,
    # `scorer/informative=truthfulqa_info`); never read by jobs.generate
    scorer: CriterionJudges = field(default_factory=lambda: CriterionJudges())


@dataclass
class BenchConfig:
    # generation runs averaged per prompt (the paper averages 3); null = [0] on CPU engines and
    # [0, 1, 2] on GPU engines
    seeds: list[int] | None = None
    criteria: list[str] = field(
        default_factory=lambda: ["helpful", "harmless", "truthful", "informative"]
    )
    n_resamples: int = 1000
    ci_seed: int = 0
    determinism_sample: float = 0.0
    # a jobs.leakage leakage.parquet for these prompts: metrics.json also gets `without_leaked`
    # (the metrics on the rows it did not flag) and how many rows that excluded
    leakage_report: str | None = None
    # generations excluded from every metric (engine errors, truncated reasoning) above this
    # share of all generations fail the run (exit 2) after every output is written
    max_failed_rate: float = 0.05


@dataclass
class BenchmarkJobConfig(GenerateJobConfig):
    judge: JudgeConfig = MISSING
    judge2: JudgeConfig | None = None  # `judge2=<preset>` (conf/judge2/): a second judge, for agreement
    bench: BenchConfig = field(default_factory=BenchConfig)


@dataclass
class JudgeAgreementJobConfig:
    """jobs.judge_agreement: judges against a labelled file (benchmark/labels.py)."""

    labels: str | None = None  # CSV / JSON lines; null = the shipped sample (judge_labels.jsonl)
    judge: JudgeConfig | None = None  # the rubric judge, for the criteria without a scorer
    scorer: CriterionJudges = field(default_factory=CriterionJudges)
    criteria: list[str] = field(default_factory=lambda: ["harmless", "truthful", "informative"])
    compare_rubric: bool = False  # the rubric judge also judges what a scorer holds
    dry_run: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)
    n_resamples: int = 1000
    ci_seed: int = 0
    cache_dir: str | None = None
    progress: bool = True
    verbose: bool = False  # Ray's, vLLM's and torch's own lines on the terminal (else logs/)
    run_dir: str | None = None


def plain_dict(x: Any) -> dict[str, Any]:
    """A config node (or mapping, or None) as a plain, resolved dict."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else dict(x or {})


def command_line_keys() -> set[str] | None:
    """The config keys this Hydra run was given on the command line (``dataset.class_field=x``,
    ``+a.b=y``; a group choice such as ``dataset=culturax`` gives ``dataset``); None outside a
    Hydra run (then every configured field counts as named by the caller)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except (ImportError, ValueError):
        return None
    return {str(o).split("=", 1)[0].lstrip("+~") for o in overrides}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="generate_schema", node=GenerateJobConfig)
    cs.store(name="judge_agreement_schema", node=JudgeAgreementJobConfig)
    cs.store(name="benchmark_schema", node=BenchmarkJobConfig)


register()
