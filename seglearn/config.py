"""Typed configuration: dataclass schema, YAML loading, ``--set a.b=value`` overrides.

Every key has a type and a default (the defaults are the demo's embedded configuration). Loading
checks each value's type and rejects unknown keys with the list of valid ones, so a typo never
silently falls back to a default; then :func:`validate` checks every value against what it accepts
(ranges, registry names, the quantizers' own bits and arguments), so a bad value fails with the key
named before any work starts. Values given on the command line are parsed with
``yaml.safe_load`` (never ``eval``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable



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
    augment: str = "basic"       # basic (90-degree rotations, flips, colour jitter) | strong (+ elastic/affine, HED stain jitter, blur, noise)


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
    # A budget in minutes instead of steps (0 = use steps): the final segmenter's training time,
    # shared by final.members. The number of steps is measured as steps per second in the first
    # steps and the whole schedule (cosine decay, the quantizers' phases) is laid over it.
    minutes: float = 0.0
    # What a minutes budget counts: "wall" (the clock on the wall: what a user waits) or "cpu"
    # (this process's CPU seconds divided by its torch threads: close to equal work for runs that
    # share a machine lightly, where other processes would otherwise shorten a wall-clock budget;
    # not on an oversubscribed one, where waiting threads burn CPU and a CPU-second buys fewer
    # steps: use steps to compare runs there).
    clock: str = "wall"
    # Linear learning-rate warm-up over this fraction of the steps, then the cosine decay over the
    # rest (0 = none: cosine from the first step). See engine.learning_rate; under train.minutes
    # its length is fixed at the first estimate of the step count (engine.fit).
    warmup: float = 0.0


@dataclass
class EnsembleConfig:
    """The suggestive ensemble (QSA in Xu et al. 2018)."""

    members: int = 4
    bootstrap: bool = True
    # The ensemble only ranks images (uncertainty, descriptors): a short training does. 60 keeps
    # the demo (two rounds of 4 members) under 10 minutes on 2 cores; 0 = train.steps.
    steps: int = 60
    # The whole ensemble's training time in minutes, shared by its members (0 = use steps).
    minutes: float = 0.0
    # Resolution of the suggestive ensemble relative to data.scale: its members train on images
    # resized by data.scale * scale (crops stay data.crop px) and score the pool at that factor.
    # The ensemble only ranks images (Yang et al. 2017), so it need not see full resolution; at
    # 0.5 pool inference costs 4x fewer FLOPs. The final segmenter always uses data.scale.
    # Default 0.5: the demo's two rounds train and score 40% faster (353-374 s -> 226-251 s on
    # a 2-core Zen 3) with its final model as good on glands (F1 0.888 vs 0.879 over seeds 0-2)
    # and on thin vessels (pixel Dice 0.966/0.965 vs 0.966/0.967, seeds 0-1). The GlaS configs
    # keep 1.0 (the paper's protocol; their committed rows).
    scale: float = 0.5
    # Continued rounds (seglearn.app.train): every round after the first starts each member from
    # the previous round's member of the same index and trains this fraction of the budget (steps
    # or minutes); 0 = every round from scratch. Off by default until the from-scratch comparison
    # of issue 14 (bench/al.py runs it) says a continued round ranks as well.
    continue_fraction: float = 0.0
    quant: QuantConfig = field(default_factory=QuantConfig)


@dataclass
class FinalConfig:
    """The final segmenter (QNT in Xu et al. 2018): one model or an averaged ensemble."""

    members: int = 1
    steps: int = 0               # 0 = train.steps
    # As ensemble.continue_fraction, for the final segmenter (a fraction of final.steps or of
    # train.minutes); 0 = from scratch.
    continue_fraction: float = 0.0
    # The final segmenter's peak learning rate and warm-up fraction (null = train.lr, train.warmup).
    # Its own because its recipe is measured on its own (bench/recipe.py scores the final model on
    # held-out training images), while the suggestive ensemble, which only ranks images and trains
    # a tenth of the steps, keeps the settings its ranking benchmarks were run with.
    lr: float | None = None
    warmup: float | None = None
    quant: QuantConfig = field(default_factory=QuantConfig)


@dataclass
class ActiveConfig:
    strategy: str = "suggestive"
    budget: int = 8              # k: images suggested per round
    candidates: int = 16         # K: most uncertain images considered by max-cover
    score: str = "std"           # a name in seglearn.active.scores.SCORES (std, entropy, bald ...)
    reduction: str = "mean"
    # Pool transform of the descriptors before max-cover / coreset (seglearn.active.descriptors):
    # yang = Yang et al.'s raw spatial means; centered = z-scored per channel over the pool.
    descriptor: str = "centered"
    initial_labeled: float = 0.1
    seed: int = 0
    batch_size: int = 4          # inference batch over the pool
    pre_annotate: bool = False   # select also writes the model's masks (PNG + GeoJSON) to correct


@dataclass
class PostprocessConfig:
    """Post-processing of probability maps into instances: the config's ``postprocess`` section and
    the one parameter type of :func:`seglearn.postprocess.instances_from_probs`, its tuning and
    ``export_model`` (``seglearn.postprocess.PostprocessParams`` is this class). The steps are in
    ``seglearn.postprocess.instances`` (contour-aware seeds and regrowth, DCAN, Chen et al. 2016).
    Areas are in pixels of the probability map, i.e. at the scale the model runs at.

    fg_threshold: foreground is ``fg_prob > fg_threshold``.
    contour_threshold: contour band is ``contour_prob > contour_threshold``; removed to make seeds.
    mode: "instances" (the steps above) or "semantic" (foreground only: the thresholded
    foreground's 8-connected components with only ``min_area`` applied; no contour cut, no
    splitting, no hole filling: thin structures such as vessels, whose holes are background).
    min_area: final objects smaller than this are removed (0 keeps everything). Unset in a config,
    it is ``30 * data.scale**2`` (``seed_min_area``: ``10 * data.scale**2``), rounded, at least 1:
    sizes are in pixels of the model's input (:func:`scaled_postprocess_defaults`).
    seed_min_area: seeds smaller than this are dropped before regrowth.
    fill_holes: fill each object's enclosed background holes.
    watershed: regrow seeds by marker watershed (True) or by geodesic dilation (False).
    use_contour: use the contour map when the model has one (False ignores it).
    split_touching: without contours, split touching objects by a distance-transform watershed.
    split_h: h-maxima height (pixels of distance) of the split markers; larger merges more.
    tta: test-time flip averaging: the model runs on the image and its horizontal, vertical and
    double flips, and the four logit maps, flipped back, are averaged before the thresholds (4x the
    inference). Stored with the model like the rest, so evaluate (torch) and the exported runtime
    (which sums its four integer decision margins, ``SlqModel.margins``) both use it, or neither.
    tune: a switch of the app, not of the steps: ``train --final`` picks the thresholds, the mode,
    ``min_area``, hole filling and splitting on the model's training labels and stores them
    (``seglearn.app.tune``).

    Built in code (not loaded), the values are checked as loading checks them (types, then
    ``RULES``), so a bad value fails when the object is made, with the key named.
    """

    fg_threshold: float = 0.5
    contour_threshold: float = 0.5
    min_area: int = 30
    seed_min_area: int = 10
    fill_holes: bool = True
    watershed: bool = True
    use_contour: bool = True
    split_touching: bool = False
    split_h: float = 2.0
    mode: str = "instances"      # instances | semantic (foreground only), see above
    tta: bool = False            # test-time flip averaging (4 passes), see above
    tune: bool = True

    def __post_init__(self) -> None:
        _check_section(self, "postprocess", "post-processing parameters")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "post-processing parameters") -> "PostprocessConfig":
        """The parameters in ``d`` (missing fields keep their defaults); unknown keys, wrong types
        and out-of-range values are a :class:`ConfigError` naming the key."""
        out = cls()
        _merge(out, d, "postprocess.", where)
        _check_section(out, "postprocess", where)
        return out


@dataclass
class EvaluateConfig:
    # Which metrics fit the objects (seglearn.metrics.shape): objects = GlaS object metrics (F1,
    # object Dice, object Hausdorff) and pixel Dice/IoU; pixels = pixel Dice/IoU only (thin
    # structures such as vessels, where "an object" is a whole tree); auto = decided from the
    # ground truth's instances (blob-like -> objects, elongated -> pixels).
    metrics: str = "auto"


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
    # glands (H&E-like gland instances, the demo's) | vessels (thin branching trees, binary masks,
    # scored per pixel): seglearn.data.synthetic
    kind: str = "glands"


@dataclass
class ComputeConfig:
    """Where training members and pool scoring run (seglearn.compute). Not part of the config
    hash: a backend changes where the work runs, not its results (same seeds, same samples)."""

    backend: str = "local"       # local (in this process, today's behaviour) | ray
    # ray only. auto: the cluster named by $RAY_ADDRESS if set, else a local Ray cluster started
    # in this process (ray.init()); or HOST:PORT / ray://HOST:PORT of a running cluster
    # (`ray start --head`), probed first so a wrong address fails within seconds.
    address: str = "auto"
    cpus_per_task: int = 1       # CPUs Ray reserves per task; torch/numba threads in the task
    chunk: int = 64              # pool images per scoring task (ray)
    max_retries: int = 2         # reruns of a member task whose worker died or that raised


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Short SHA-256 of the canonical JSON form: recorded with every model and result."""
        return dict_hash(self.to_dict())


def dict_hash(data: dict) -> str:
    """``Config.hash`` of a config as ``to_dict`` wrote it, also one stored with a result before a
    key of :data:`ADDED_KEYS` existed (missing there: at its default)."""
    data = {section: dict(values) if isinstance(values, dict) else values
            for section, values in data.items()}
    data.pop("compute", None)  # where the work runs: same results, same hash (and today's hashes)
    for (section, key), default in ADDED_KEYS.items():
        # a key added later, at its default: the hash of before, so runs and workspaces started
        # then resume
        if isinstance(data.get(section), dict) and data[section].get(key, default) == default:
            data[section].pop(key, None)
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


AUGMENTS = ("basic", "strong")  # data.augment (seglearn.data.transforms.train_transforms)

# Keys added after results were recorded under config hashes, with the default that reproduces the
# behaviour of before: Config.hash leaves them out at that default.
ADDED_KEYS: dict[tuple[str, str], Any] = {("data", "augment"): "basic", ("train", "warmup"): 0.0,
                                          ("postprocess", "tta"): False, ("final", "lr"): None,
                                          ("final", "warmup"): None}


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
    if base is float:
        return _as_float(value, key, where)
    if base is int and isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be int, not {value!r}")
    if base in (int, float, str, bool, list, dict) and not isinstance(value, base):
        raise ConfigError(f"{where}: {key} must be {base.__name__}, not {value!r}")
    return value


# A number in YAML 1.1 (PyYAML) needs a dot: ``1e-3`` loads as the string '1e-3'. Float keys take it.
_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _as_float(value: Any, key: str, where: str) -> float:
    """A float key's value: an int, a float or a decimal string (``1e-3``); finite."""
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key} must be float, not {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, not {value!r}")
    return float(value)


def _check_section(obj: Any, section: str, where: str) -> None:
    """Check a section object built in code the way loading checks one: each field's type (numpy
    scalars count as the Python ones) and its ``RULES`` entry. Converts in place as loading
    does (an int for a float key becomes a float)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        key = f"{section}.{f.name}"
        value = getattr(obj, f.name)
        if type(value).__module__ == "numpy" and hasattr(value, "item"):
            value = value.item()  # np.float64, np.int64, np.bool_ from array code
        value = _check_type(value, hints[f.name], key, where)
        rule = RULES.get(key)
        if rule is not None:
            ok, accepted = _accepts(rule, value)
            if not ok:
                raise ConfigError(f"{where}: {key} must be {accepted}, not {value!r}")
        object.__setattr__(obj, f.name, value)


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


# Post-processing sizes are areas in pixels of the model's input, so their defaults (the values at
# data.scale 1) follow data.scale**2 when a config does not set them: 30 px at full resolution is
# 8 px at half (issue 14, item 6). Resolved once, where a config is built from a file or a dict;
# the workspace stores the resolved values, so its config never changes afterwards.
SCALED_DEFAULTS = {"postprocess.min_area": 30, "postprocess.seed_min_area": 10}


def scaled_default(base: int, scale: float) -> int:
    """``base * scale**2`` rounded half up, at least 1 (an area default never becomes "keep all")."""
    return max(1, math.floor(base * float(scale) ** 2 + 0.5))


def _dotted(data: Any, prefix: str = "") -> set[str]:
    """Every dotted key set in a nested mapping (a section given as a mapping adds its own key too)."""
    out: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{prefix}{k}"
            out.add(key)
            out |= _dotted(v, f"{key}.")
    return out


def scaled_postprocess_defaults(cfg: Config, given: set[str]) -> Config:
    """Set every :data:`SCALED_DEFAULTS` key not in ``given`` (the dotted keys the user set) to its
    default scaled by ``data.scale**2`` (:func:`scaled_default`); keys in ``given`` are kept as
    given. In place; returns ``cfg``."""
    for key, base in SCALED_DEFAULTS.items():
        if key not in given:
            section, name = key.split(".")
            setattr(getattr(cfg, section), name, scaled_default(base, cfg.data.scale))
    return cfg


def config_from_dict(data: dict | None, where: str = "config", torch_checks: bool = True) -> Config:
    """The config of ``data`` (missing keys take their defaults; the post-processing sizes it does
    not set follow its ``data.scale``: :func:`scaled_postprocess_defaults`), validated."""
    cfg = Config()
    _merge(cfg, data or {}, "", where)
    scaled_postprocess_defaults(cfg, _dotted(data))
    validate(cfg, where, torch_checks)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                torch_checks: bool = True) -> Config:
    """Load a YAML config (None = the embedded defaults) and apply ``a.b=value`` overrides.
    ``torch_checks``: see :func:`validate`."""
    data: dict = {}
    where = "config"
    if path is not None:
        p = Path(path)
        where = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        import yaml  # lazy: PyYAML; the runtime reads PostprocessConfig without it

        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    cfg = config_from_dict(data, where, torch_checks)
    cfg = apply_overrides(cfg, overrides or [], torch_checks)
    if overrides:  # --set data.scale=0.5 rescales the sizes neither the file nor --set gave
        given = _dotted(data).union(*(_dotted(_override(item)[1]) for item in overrides))
        scaled_postprocess_defaults(cfg, given)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str], torch_checks: bool = True) -> Config:
    """Apply ``section.key=value`` strings; values are parsed as YAML scalars/lists."""
    for item in overrides:
        _merge(cfg, _override(item)[1], "", f"--set {item}")
    validate(cfg, "--set", torch_checks)
    return cfg


def _override(item: str) -> tuple[str, dict]:
    """``"a.b=value"`` -> ``("a.b", {"a": {"b": value}})``, the value parsed as a YAML scalar/list."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.steps=100")
    key, raw = item.split("=", 1)
    key = key.strip()
    import yaml  # lazy: PyYAML (see load_config)

    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, _nested(key, value)


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


class _Range:
    """``lo <= x <= hi`` (``<`` where open; None = unbounded), printed as the accepted range."""

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open

    def __call__(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'greater than' if self.lo_open else 'at least'} {self.lo:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")


def _registry(module: str, name: str) -> Callable[[], list[str]]:
    """The names registered in ``module.name``, read when a value is checked (the import is
    lazy: seglearn.models imports torch; seglearn.active needs numpy only)."""
    def names() -> list[str]:
        return getattr(importlib.import_module(module), name).names()
    return names


_STRATEGIES = _registry("seglearn.active.strategies", "STRATEGIES")
_SCORES = _registry("seglearn.active.scores", "SCORES")
_REDUCTIONS = _registry("seglearn.active.scores", "REDUCTIONS")
_DESCRIPTORS = _registry("seglearn.active.descriptors", "DESCRIPTORS")
_MODELS = _registry("seglearn.models.fcn", "MODELS")
AT_LEAST_0, AT_LEAST_1 = _Range(0), _Range(1)
FRACTION = _Range(0, 1, lo_open=True)          # (0, 1]
PROBABILITY = _Range(0, 1)                      # [0, 1]

# key -> accepted values: a _Range, a tuple of names, or a function returning the registry's names.
# Every scalar key of the schema is here (tests/config checks that); lists and quantizer keys are
# checked by _check_lists and _check_quant below.
RULES: dict[str, Any] = {
    "data.crop": _Range(16), "data.scale": _Range(0, 4, lo_open=True),
    "data.batch_size": AT_LEAST_1, "data.cache": None, "data.max_pixels": AT_LEAST_1,
    "data.contour_width": AT_LEAST_1, "data.workers": AT_LEAST_0, "data.augment": AUGMENTS,
    "model.name": _MODELS, "model.width": AT_LEAST_1, "model.depth": _Range(2, 8),
    "model.up": ("nearest", "transpose"), "model.contour_head": None,
    "model.contour_weight": AT_LEAST_0,
    "train.steps": AT_LEAST_1, "train.lr": _Range(0, 1, lo_open=True),
    "train.weight_decay": _Range(0, 1), "train.bf16": None, "train.channels_last": None,
    "train.device": None,  # auto | cpu | cuda | cuda:N: checked in validate
    "train.seed": AT_LEAST_0, "train.threads": AT_LEAST_0, "train.checkpoint_every": AT_LEAST_1,
    "train.minutes": AT_LEAST_0, "train.clock": ("wall", "cpu"), "train.warmup": _Range(0, 0.5),
    "ensemble.members": AT_LEAST_1, "ensemble.bootstrap": None, "ensemble.steps": AT_LEAST_0,
    "ensemble.minutes": AT_LEAST_0,
    "ensemble.scale": FRACTION, "ensemble.continue_fraction": _Range(0, 1),
    "final.members": AT_LEAST_1, "final.steps": AT_LEAST_0, "final.continue_fraction": _Range(0, 1),
    "final.lr": _Range(0, 1, lo_open=True), "final.warmup": _Range(0, 0.5),
    "active.strategy": _STRATEGIES, "active.budget": AT_LEAST_1, "active.candidates": AT_LEAST_1,
    "active.score": _SCORES, "active.reduction": _REDUCTIONS, "active.descriptor": _DESCRIPTORS,
    "active.initial_labeled": FRACTION,
    "active.seed": AT_LEAST_0, "active.batch_size": AT_LEAST_1, "active.pre_annotate": None,
    "postprocess.fg_threshold": PROBABILITY, "postprocess.contour_threshold": PROBABILITY,
    "postprocess.min_area": AT_LEAST_0, "postprocess.seed_min_area": AT_LEAST_0,
    "postprocess.fill_holes": None, "postprocess.watershed": None,
    "postprocess.use_contour": None, "postprocess.split_touching": None,
    "postprocess.split_h": _Range(0, lo_open=True), "postprocess.tune": None,
    "postprocess.mode": ("instances", "semantic"), "postprocess.tta": None,
    "evaluate.metrics": ("auto", "objects", "pixels"),
    "simulate.target_fraction": FRACTION, "simulate.rounds": AT_LEAST_0,
    "synthetic.n": _Range(2), "synthetic.size": _Range(16), "synthetic.seed": AT_LEAST_0,
    "synthetic.test_fraction": _Range(0, 1, hi_open=True), "synthetic.kind": ("glands", "vessels"),
    "compute.backend": ("local", "ray"), "compute.address": None,  # checked in validate
    "compute.cpus_per_task": AT_LEAST_1, "compute.chunk": AT_LEAST_1,
    "compute.max_retries": AT_LEAST_0,
}
INHERITED = {"final.lr": "train.lr", "final.warmup": "train.warmup"}  # null = the other key's value
TORCH_KEYS = ("model.name",)  # RULES whose check imports torch (seglearn.models)
# compute.address: auto, HOST:PORT or ray://HOST:PORT (a host name, IPv4 or [IPv6], a port)
_ADDRESS = re.compile(r"^(ray://)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")
_CONTINUE = " (the share of the budget a continued round trains; 0 = from scratch)"
NOTES = {"ensemble.scale": " (a fraction of data.scale, e.g. 0.5 = half resolution)",
         "ensemble.continue_fraction": _CONTINUE, "final.continue_fraction": _CONTINUE}
QUANT_KEYS = ("weight", "act", "w_bits", "a_bits", "first_last", "fold_bn", "weight_args",
              "act_args")


def get_key(cfg: Config, key: str) -> Any:
    """The value of dotted ``key`` in ``cfg``."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _accepts(rule: Any, value: Any) -> tuple[bool, str]:
    if isinstance(rule, _Range):
        return rule(value), str(rule)
    names = list(rule() if callable(rule) else rule)
    return value in names, "one of " + ", ".join(names)


def validate(cfg: Config, where: str, torch_checks: bool = True) -> None:
    """Every key against its accepted values (types are checked on loading, by the schema):
    ranges, names from the registries (strategies, scores, reductions, models, quantizers), and
    the quantizer settings as the quantizer itself accepts them. The message names the key, what
    it accepts and the value given; nothing has run yet when it fails.

    ``torch_checks=False`` skips the two checks that import torch (``model.name`` against the
    model registry, the quantizer settings): for commands that build no model (label, status,
    predict), which would otherwise pay torch's import (seconds) to check keys they never read;
    the commands that build models check them before any work."""
    for key, rule in RULES.items():
        if rule is None or (not torch_checks and key in TORCH_KEYS):
            continue
        value = get_key(cfg, key)
        if value is None and key in INHERITED:
            continue
        ok, accepted = _accepts(rule, value)
        if not ok:
            raise ConfigError(f"{where}: {key} must be {accepted}{NOTES.get(key, '')}, "
                              f"not {value!r}")
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", dev)):
        raise ConfigError(f"{where}: train.device must be auto, cpu, cuda or cuda:N, not {dev!r}")
    addr = cfg.compute.address
    m = _ADDRESS.match(addr)
    if addr != "auto" and not (m and 0 < int(m.group(3)) < 65536):
        raise ConfigError(f"{where}: compute.address must be auto, HOST:PORT or ray://HOST:PORT "
                          f"(e.g. 10.0.0.5:6379), not {addr!r}")
    if cfg.data.crop % 2 ** (cfg.model.depth - 1):
        raise ConfigError(f"{where}: data.crop must be a multiple of 2**(model.depth-1) = "
                          f"{2 ** (cfg.model.depth - 1)}, not {cfg.data.crop}")
    _check_lists(cfg, where)
    if not torch_checks:
        return
    for role in ("ensemble", "final"):
        _check_quant(getattr(cfg, role).quant, f"{role}.quant", where)


def _check_lists(cfg: Config, where: str) -> None:
    sim = cfg.simulate
    known = _STRATEGIES()
    if not sim.strategies:
        raise ConfigError(f"{where}: simulate.strategies must list at least one of {', '.join(known)}")
    for name in sim.strategies:
        if name not in known:
            raise ConfigError(f"{where}: simulate.strategies: {name!r} is not a strategy; "
                              f"each must be one of {', '.join(known)}")
    if len(set(sim.strategies)) != len(sim.strategies):
        raise ConfigError(f"{where}: simulate.strategies lists a strategy twice: {sim.strategies}")
    if not sim.seeds:
        raise ConfigError(f"{where}: simulate.seeds must list at least one seed (an integer >= 0)")
    for seed in sim.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}: simulate.seeds: {seed!r} is not a seed; each must be an "
                              "integer >= 0")
    if len(set(sim.seeds)) != len(sim.seeds):
        raise ConfigError(f"{where}: simulate.seeds lists a seed twice: {sim.seeds}")


def _check_quant(q: QuantConfig, prefix: str, where: str) -> None:
    """A scheme's method names, bits and arguments, by building its quantizers (cheap modules) the
    way training will: each method's own checks (e.g. twn: bits must be 2) then fail here, before
    any work, with the keys named."""
    # lazy: torch (seglearn.quant), only when a config names quantizers: config imports without
    # torch (the runtime reads PostprocessConfig)
    from seglearn.quant import QUANTIZERS, get_quantizer  # imports torch
    from seglearn.quant.convert import FIRST_LAST

    if q.first_last not in FIRST_LAST:
        raise ConfigError(f"{where}: {prefix}.first_last must be one of {', '.join(FIRST_LAST)}, "
                          f"not {q.first_last!r}")
    for kind, name, bits, args in (("weight", q.weight, q.w_bits, q.weight_args),
                                   ("act", q.act, q.a_bits, q.act_args)):
        bits_key, args_key = f"{prefix}.{kind[0]}_bits", f"{prefix}.{kind}_args"
        if name is None:
            if args:
                raise ConfigError(f"{where}: {args_key} is set but {prefix}.{kind} is null "
                                  "(no quantizer): set the method or drop the arguments")
            continue
        known = [n for n in QUANTIZERS.names() if kind in QUANTIZERS.get(n).kinds()]
        if name not in known:
            raise ConfigError(f"{where}: {prefix}.{kind} must be null (float) or one of "
                              f"{', '.join(known)}, not {name!r}")
        try:
            get_quantizer(name, kind=kind, bits=bits, **args)
        except TypeError as e:  # an argument the method does not take
            raise ConfigError(f"{where}: {args_key} {args!r} does not fit {prefix}.{kind}={name}: "
                              f"{e}") from None
        except ValueError as e:
            raise ConfigError(f"{where}: {bits_key}={bits}"
                              f"{f', {args_key}={args!r}' if args else ''} does not fit "
                              f"{prefix}.{kind}={name}: {e}") from None


def role_scale(cfg: Config, role: str) -> float:
    """The resize factor a model of ``role`` trains and runs at.

    ``"final"``: ``data.scale``. ``"suggestive"``: ``data.scale * ensemble.scale``: the suggestive
    ensemble only ranks unlabeled images by uncertainty and similarity (Yang et al. 2017), a job a
    coarser view does too, while its inference over the whole pool is the cost of ``select``
    (quadratic in the scale: 4x fewer FLOPs at 0.5). Training (app.train, which records it in each
    member's sidecar) and inference (``models.ensemble.trained_scale``: select for the suggestive
    ensemble; evaluate, tune and export for the final model) read that sidecar, falling back to
    this for models saved before the factor was recorded, so the two cannot disagree.
    """
    _check_role(role)
    if role == "final":
        return float(cfg.data.scale)
    return float(cfg.data.scale) * float(cfg.ensemble.scale)


def role_train(cfg: Config, role: str | None) -> TrainConfig:
    """The training settings a model of ``role`` trains with: ``train``, with the set keys of
    :data:`INHERITED` (``final.lr``, ``final.warmup``) in place of the ``train`` keys they inherit
    from, for the final segmenter (``None``: ``train`` as it is, e.g. a benchmark's own model)."""
    if role is None:
        return cfg.train
    _check_role(role)
    if role != "final":
        return cfg.train
    own = {train_key.split(".", 1)[1]: get_key(cfg, key) for key, train_key in INHERITED.items()
           if get_key(cfg, key) is not None}
    return dataclasses.replace(cfg.train, **own)


def role_key(cfg: Config, role: str | None, train_key: str) -> str:
    """The config key that set ``train_key``'s value (e.g. ``"train.lr"``) for a model of ``role``:
    the final segmenter's own key of :data:`INHERITED` where it is set, else ``train_key``. What a
    message tells the user to ``--set`` (``role_train`` reads the same table)."""
    if role is not None:
        _check_role(role)
    for key, inherited in INHERITED.items():
        if role == "final" and inherited == train_key and get_key(cfg, key) is not None:
            return key
    return train_key


def _check_role(role: str) -> None:
    if role not in ("suggestive", "final"):
        raise ValueError(f"unknown model role {role!r}; expected 'suggestive' or 'final'")


def replace(cfg: Config, **sections: Any) -> Config:
    return dataclasses.replace(cfg, **sections)
