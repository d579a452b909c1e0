"""The structured config of `jobs.build_dataset`, registered in Hydra's ConfigStore.

Three model *roles* (classifier, generator, critic) are model presets bound by configuration
(``roles.classifier=<preset>`` ...); each step has its own small section. YAML under
``conf/build_dataset.yaml``, ``conf/seeds/`` and ``conf/builder/`` holds presets only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from aligncultura.config import EngineConfig, InputConfig, ModelConfig, WandbConfig


@dataclass
class RolesConfig:
    classifier: ModelConfig = MISSING  # paper: Mistral-7B-Instruct-v0.3
    generator: ModelConfig = MISSING  # expansion and responses (paper: Llama-3.1-8B-Instruct)
    critic: ModelConfig = MISSING  # HHH critic; a different model from the generator on clusters


@dataclass
class ClassifyConfig:
    """Multi-label reclassification over the 41 subdomains (see aligncultura/builder/classify.py).

    ``exhaustive``: one yes/no question per (prompt, subdomain), 41 per prompt, sharing a prefix.
    ``shortlist``: the classifier first names up to ``shortlist_size`` ids, then only those (plus
    the row's own input label and, for generated prompts, the target) get the yes/no question.
    """

    method: str = "exhaustive"  # exhaustive | shortlist
    delta: float = 0.5  # keep labels with p(yes) >= delta; none passes -> None (41)
    shortlist_size: int = 3
    top_logprobs: int = 20  # vLLM's default max_logprobs
    # P(yes) + P(no) at the answer token below this: the label is unscored, never a confident p
    min_yes_no_mass: float = 0.5
    max_tokens_shortlist: int = 16


@dataclass
class ExpandConfig:
    min_per_subdomain: int = 100  # the floor
    subdomains: list[int] | None = None  # target ids; null = all 41 subdomains (0-40)
    oversample: float = 1.5  # generate ceil(shortfall * oversample) per subdomain and round
    max_rounds: int = 2  # rounds of generate -> dedup -> classify while a floor is unmet
    few_shot: int = 3  # same-subdomain seed examples per request
    temperature: float = 0.9
    top_p: float = 0.95
    max_tokens: int = 96
    structured: bool = True  # constrain the reply to one line ending in "?" (a regex; set false
    # for API generators that take no regex, e.g. api.openai.com)
    seed: int = 0


@dataclass
class DedupStepConfig:
    max_distance: int = 10  # SimHash 64-bit Hamming radius
    references: list[InputConfig] = field(default_factory=list)  # corpora to dedup against


@dataclass
class RespondConfig:
    k: int = 3  # candidates per prompt and round
    temperature: float = 0.7
    top_p: float = 0.9
    max_tokens: int = 512
    repetition_penalty: float = 1.0
    max_feedback_rounds: int = 2  # rounds that show the critiques back to the generator
    critic_max_tokens: int = 256  # >= 128 so the JSON verdict is not cut off
    critic_temperature: float = 0.0
    critic_structured: str = "regex"  # regex (bounded critique, fixed key order) | json (schema)
    critique_max_chars: int = 120  # asked for in the critic prompt (and JSON maxLength); the
    # regex leaves it unbounded (fast to compile): critic_max_tokens must leave room for it
    seed: int = 0


@dataclass
class SplitStepConfig:
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 42
    leakage_target: float = 0.003  # share of val/test rows with a train near-duplicate


@dataclass
class BuildDatasetJobConfig:
    seeds: InputConfig = field(default_factory=InputConfig)
    roles: RolesConfig = field(default_factory=RolesConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    expand: ExpandConfig = field(default_factory=ExpandConfig)
    dedup: DedupStepConfig = field(default_factory=DedupStepConfig)
    respond: RespondConfig = field(default_factory=RespondConfig)
    split: SplitStepConfig = field(default_factory=SplitStepConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run_dir: str | None = None
    cache_dir: str | None = None  # row cache; "off" disables it
    dry_run: bool = False
    progress: bool = True
    verbose: bool = False  # Ray's, vLLM's and torch's own lines on the terminal (else logs/)


def register() -> None:
    ConfigStore.instance().store(name="build_dataset_schema", node=BuildDatasetJobConfig)


register()
