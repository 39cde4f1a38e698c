"""Typed configuration: dataclass schema, YAML loading, ``--set a.b=value`` overrides.

Every key has a type and a default (the defaults are the demo's embedded configuration). Loading
checks each value's type and rejects unknown keys with the list of valid ones, so a typo never
silently falls back to a default. Values given on the command line are parsed with
``yaml.safe_load`` (never ``eval``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass
class DataConfig:
    crop: int = 128              # training crop side (pixels, after scaling)
    scale: float = 1.0           # resize factor applied to images before cropping (0.5 = half res)
    batch_size: int = 8
    cache: bool = True           # MONAI CacheDataset for small sets
    max_pixels: int = 100_000_000  # refuse larger images (decompression bombs)
    contour_width: int = 3       # boundary band width for the contour head's targets
    workers: int = 0


@dataclass
class ModelConfig:
    name: str = "fcn"
    width: int = 16
    depth: int = 4
    up: str = "nearest"          # nearest | transpose
    contour_head: bool = False
    contour_weight: float = 1.0  # loss weight of the contour head


@dataclass
class QuantConfig:
    """A quantization scheme (see seglearn.quant.convert.quantize_model). weight None = float."""

    weight: str | None = "inq"
    act: str | None = None
    w_bits: int = 7
    a_bits: int = 8
    first_last: str = "same"     # same | iao8 | float
    fold_bn: bool | None = None  # None = the method's default (IAO folds batch norm)
    weight_args: dict = field(default_factory=dict)
    act_args: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    steps: int = 300             # optimizer steps per model
    lr: float = 2e-3
    weight_decay: float = 1e-4
    bf16: bool = True            # bf16 autocast where it is fast (CUDA, AVX-512/AMX CPUs), else fp32
    channels_last: bool = True
    device: str = "auto"         # auto | cpu | cuda
    seed: int = 0
    threads: int = 0             # 0 = torch default
    checkpoint_every: int = 50   # steps between resumable checkpoints


@dataclass
class EnsembleConfig:
    """The suggestive ensemble (QSA in Xu et al. 2018)."""

    members: int = 4
    bootstrap: bool = True
    # The ensemble only ranks images (uncertainty, descriptors): a short training does. 60 keeps
    # the demo (two rounds of 4 members) under 10 minutes on 2 cores; 0 = train.steps.
    steps: int = 60
    # Resolution of the suggestive ensemble relative to data.scale: its members train on images
    # resized by data.scale * scale (crops stay data.crop px) and score the pool at that factor.
    # The ensemble only ranks images (Yang et al. 2017), so it need not see full resolution; at
    # 0.5 pool inference costs 4x fewer FLOPs. The final segmenter always uses data.scale.
    scale: float = 1.0
    quant: QuantConfig = field(default_factory=QuantConfig)


@dataclass
class FinalConfig:
    """The final segmenter (QNT in Xu et al. 2018): one model or an averaged ensemble."""

    members: int = 1
    steps: int = 0               # 0 = train.steps
    quant: QuantConfig = field(default_factory=QuantConfig)


@dataclass
class ActiveConfig:
    strategy: str = "suggestive"
    budget: int = 8              # k: images suggested per round
    candidates: int = 16         # K: most uncertain images considered by max-cover
    score: str = "std"           # std | variance | entropy | bald
    reduction: str = "mean"
    initial_labeled: float = 0.1
    seed: int = 0
    batch_size: int = 4          # inference batch over the pool


@dataclass
class PostprocessConfig:
    fg_threshold: float = 0.5
    contour_threshold: float = 0.5
    min_area: int = 30
    seed_min_area: int = 10
    fill_holes: bool = True
    watershed: bool = True
    tune: bool = False           # pick thresholds on a validation split by object F1


@dataclass
class SimulateConfig:
    strategies: list = field(default_factory=lambda: ["random", "suggestive"])
    seeds: list = field(default_factory=lambda: [0])
    target_fraction: float = 0.5
    rounds: int = 0              # 0 = as many as needed to reach target_fraction


@dataclass
class SyntheticConfig:
    n: int = 48
    size: int = 128
    seed: int = 0
    test_fraction: float = 0.25


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Short SHA-256 of the canonical JSON form: recorded with every model and result."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def valid_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key the schema accepts."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        t = hints[f.name]
        if is_dataclass(t):
            out += valid_keys(t, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _check_type(value: Any, tp: Any, key: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key, where)
            except ConfigError:
                pass
        names = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(f"{where}: {key} must be {names}, not {value!r}")
    base = origin or tp
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be int, not {value!r}")
    if base in (int, float, str, bool, list, dict) and not isinstance(value, base):
        raise ConfigError(f"{where}: {key} must be {base.__name__}, not {value!r}")
    return value


def _merge(obj: Any, data: dict, prefix: str, where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the top level'} must be a mapping, "
                          f"not {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            section = [k for k in valid_keys(Config) if k.startswith(prefix)] if prefix else valid_keys()
            raise ConfigError(f"{where}: unknown key {dotted!r}; valid keys: {', '.join(section)}")
        tp = hints[key]
        if is_dataclass(tp):
            _merge(getattr(obj, key), value if value is not None else {}, f"{dotted}.", where)
        else:
            setattr(obj, key, _check_type(value, tp, dotted, where))


def config_from_dict(data: dict | None, where: str = "config") -> Config:
    cfg = Config()
    _merge(cfg, data or {}, "", where)
    validate(cfg, where)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (None = the embedded defaults) and apply ``a.b=value`` overrides."""
    data: dict = {}
    where = "config"
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    cfg = config_from_dict(data, where)
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars/lists."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _merge(cfg, _nested(key, value), "", f"--set {item}")
    validate(cfg, "--set")
    return cfg


def _nested(key: str, value: Any) -> dict:
    """``"a.b.c", v`` -> ``{"a": {"b": {"c": v}}}``."""
    out: dict = {}
    cur = out
    parts = key.split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


def with_values(cfg: Config, values: dict[str, Any], where: str = "overrides") -> Config:
    """A validated copy of ``cfg`` with dotted keys set to already-typed values (None allowed
    where the schema allows it); ``cfg`` itself is unchanged."""
    out = config_from_dict(cfg.to_dict(), where)
    for key, value in values.items():
        _merge(out, _nested(key, value), "", f"{where}: {key}")
    validate(out, where)
    return out


def validate(cfg: Config, where: str) -> None:
    """Range checks that types alone cannot express."""
    checks = [
        (cfg.data.crop >= 16, "data.crop must be at least 16"),
        (0 < cfg.data.scale <= 4, "data.scale must be in (0, 4]"),
        (cfg.data.batch_size >= 1, "data.batch_size must be at least 1"),
        (cfg.model.up in ("nearest", "transpose"), "model.up must be 'nearest' or 'transpose'"),
        (cfg.train.steps >= 1, "train.steps must be at least 1"),
        (cfg.train.device in ("auto", "cpu", "cuda") or cfg.train.device.startswith("cuda:"),
         "train.device must be auto, cpu or cuda"),
        (cfg.ensemble.members >= 1, "ensemble.members must be at least 1"),
        (0 < cfg.ensemble.scale <= 1,
         f"ensemble.scale must be in (0, 1] (a fraction of data.scale, e.g. 0.5 = half "
         f"resolution), not {cfg.ensemble.scale}"),
        (cfg.final.members >= 1, "final.members must be at least 1"),
        (cfg.active.budget >= 1, "active.budget must be at least 1"),
        (0 < cfg.active.initial_labeled <= 1, "active.initial_labeled must be in (0, 1]"),
        (0 < cfg.simulate.target_fraction <= 1, "simulate.target_fraction must be in (0, 1]"),
        (cfg.data.crop % 2 ** (cfg.model.depth - 1) == 0,
         f"data.crop must be a multiple of 2**(model.depth-1) = {2 ** (cfg.model.depth - 1)}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{where}: {msg}")


def role_scale(cfg: Config, role: str) -> float:
    """The resize factor a model of ``role`` trains and runs at.

    ``"final"``: ``data.scale``. ``"suggestive"``: ``data.scale * ensemble.scale``: the suggestive
    ensemble only ranks unlabeled images by uncertainty and similarity (Yang et al. 2017), a job a
    coarser view does too, while its inference over the whole pool is the cost of ``select``
    (quadratic in the scale: 4x fewer FLOPs at 0.5). Training (app.train, which records it in each
    member's sidecar) and inference (``active.ensemble.trained_scale``: select for the suggestive
    ensemble; evaluate, tune and export for the final model) read that sidecar, falling back to
    this for models saved before the factor was recorded, so the two cannot disagree.
    """
    if role == "final":
        return float(cfg.data.scale)
    if role == "suggestive":
        return float(cfg.data.scale) * float(cfg.ensemble.scale)
    raise ValueError(f"unknown model role {role!r}; expected 'suggestive' or 'final'")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def replace(cfg: Config, **sections: Any) -> Config:
    return dataclasses.replace(cfg, **sections)
