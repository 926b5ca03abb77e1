"""Configs are dataclasses; presets are functions returning a `Config`; any field can be overridden by a dotted name.

    cfg = PRESETS["mnist-edm"]()
    apply_overrides(cfg, ["train.steps=100", "model.width=64"])

Values are parsed by the field's declared type; an unknown key lists the valid ones, a wrong type says what
was expected. `to_dict` / `from_dict` round-trip through the run directory's `config.json`.

The `data` section is the chosen dataset's own options dataclass (`unigen.data.DATASETS`, e.g. `MnistData`), so
its keys depend on `data.name`. Overriding `data.name` with another dataset switches the section to that dataset's
defaults; `data.*` values given earlier in the same override list carry over, and one the new dataset does not
have is an error. A `config.json` written when every dataset shared one `DataConfig` still loads: the fields its
dataset lacks are dropped when they hold the old defaults (they had no effect), and are an error otherwise.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from unigen.data import options as check
from unigen.data.registry import DATASETS, DEFAULT_DATASET, LEGACY_DEFAULTS, entry_of, make_options, unknown_dataset
from unigen.errors import UserError

MAX_SEED = check.MAX_SEED


def DataConfig(name: str = DEFAULT_DATASET, **fields: Any) -> Any:  # noqa: N802  (stands in for the old class)
    """Transition shim for presets written before each dataset had its own options: `DataConfig(name="text",
    seq_len=64)` returns `TextData(seq_len=64)`. New code should build the class from `unigen.data` directly."""
    return make_options(name, **fields)


@dataclass
class TrainConfig:
    steps: int = 1000           # optimisation steps
    batch_size: int = 64        # per process (global batch = batch_size * processes * grad_accum)
    grad_accum: int = 1         # micro-batches per optimisation step
    lr: float = 1e-3            # peak learning rate
    min_lr: float = 0.0         # learning rate at the end of the cosine decay
    warmup_steps: int = 0       # linear warm-up from 0 to lr
    schedule: str = "cosine"    # cosine | constant (after warm-up)
    weight_decay: float = 0.0   # AdamW decoupled weight decay
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0      # max global gradient norm (0 = off)
    precision: str = "fp32"     # fp32 | bf16 (autocast) | auto (bf16 where native: train/precision.py)
    ema_decay: float = 0.999    # EMA of weights (0 = off)
    seed: int = 0               # seeds weights, data order and training noise
    log_every: int = 10         # steps between metric lines
    eval_every: int = 0         # steps between evaluations (0 = only at the end)
    sample_every: int = 0       # steps between sample grids (0 = off)
    ckpt_every: int = 500       # steps between checkpoints (the last step is always saved)
    keep_last: int = 2          # checkpoints kept on disk
    nonfinite: str = "stop"     # on a NaN/Inf loss or gradient: stop | skip
    progress: bool = True       # show a progress bar


@dataclass
class SampleConfig:
    sampler: str = ""           # sampler name ("" = the family's default)
    steps: int = 0              # sampler steps (0 = the sampler's default)
    n: int = 64                 # number of samples
    seed: int = 0
    guidance: float = 1.0       # classifier-free guidance scale (1 = off)


@dataclass
class Config:
    task: str = ""              # family (key of unigen.registry.TASKS)
    preset: str = ""            # preset this config came from
    data: Any = field(default_factory=make_options)   # the dataset's options (unigen.data.DATASETS[data.name])
    model: Any = None           # the family's model dataclass
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, model_config: type, source: str = "config.json") -> "Config":
        """Rebuild from `to_dict()` output; `model_config` is the family's model dataclass. Unknown keys and values
        of the wrong type are a UserError that names `source` (the file the dict came from)."""
        cfg = cls(model=model_config())
        _load_into(cfg, d, "", source)
        return cfg


# Validation of values that types alone do not catch; the data section checks itself (`cfg.data.check()`) and
# families add their own by raising UserError in build().
CHOICES = {
    "train.schedule": ("cosine", "constant"),
    "train.precision": ("auto", "fp32", "bf16"),   # = train.precision.PRECISIONS
    "train.nonfinite": ("stop", "skip"),
}
POSITIVE = {"train.steps", "train.batch_size", "train.grad_accum", "train.log_every", "train.ckpt_every",
            "train.keep_last", "sample.n"}
NON_NEGATIVE = {"train.lr", "train.min_lr", "train.warmup_steps", "train.weight_decay", "train.grad_clip",
                "train.eval_every", "train.sample_every", "sample.steps", "sample.guidance"}
UNIT_INTERVAL = {"train.ema_decay", "train.beta1", "train.beta2"}
SEEDS = {"train.seed", "sample.seed"}


def validate(cfg: Config) -> None:
    """Raise UserError for a value of the wrong type or out of range; called after overrides and before anything
    runs (also on configs built in Python)."""
    _check_types(cfg, "")
    entry_of(cfg.data)
    cfg.data.check()
    for name, allowed in CHOICES.items():
        check.one_of(name, get_field(cfg, name), allowed)
    for names, rule in ((POSITIVE, check.positive), (NON_NEGATIVE, check.non_negative),
                        (UNIT_INTERVAL, check.unit_interval), (SEEDS, check.seed)):
        for name in sorted(names):
            rule(name, get_field(cfg, name))


def _check_types(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        name, v = f"{prefix}.{f.name}" if prefix else f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _check_types(v, name)
        elif not (prefix == "" and f.name == "model"):
            tp = _field_type(obj, f)
            if typing.get_origin(tp) in (tuple, list) and isinstance(v, (tuple, list)):
                v = list(v)
            check_json_value(v, tp, name, "config")


def get_field(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply `section.key=value` strings in order (a leading `--` is allowed). Raises UserError on any problem.

    `data.name=X` switches to dataset X's defaults and re-applies the `data.*` overrides given before it (see the
    module docstring); naming the current dataset changes nothing."""
    given: dict[str, str] = {}   # data.* overrides so far, as written: they carry over a switch of data.name
    for item in overrides:
        item = item[2:] if item.startswith("--") else item
        if "=" not in item:
            raise UserError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        set_field(cfg, key, raw, carry=given)
        if key.startswith("data.") and key != "data.name":
            given[key] = raw
    return cfg


def set_field(cfg: Any, dotted: str, raw: str, carry: dict[str, str] | None = None) -> None:
    """Set one dotted field from its string form, parsed by the field's type. `data.name` switches the dataset,
    then applies the `carry` overrides (dotted key -> raw value) to the new section."""
    if dotted == "data.name" and isinstance(cfg, Config):
        switch_dataset(cfg, raw, carry or {})
        return
    parts = dotted.split(".")
    obj, path = cfg, []
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj):
            raise UserError(f"{'.'.join(path)} has no sub-fields (got key {dotted!r})")
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            raise _unknown_key(obj, path, dotted)
        path.append(part)
        if i < len(parts) - 1:
            obj = getattr(obj, part)
    f = fields[parts[-1]]
    if dataclasses.is_dataclass(getattr(obj, f.name)):
        valid = ", ".join(_valid_keys(getattr(obj, f.name), dotted))
        raise UserError(f"{dotted} is a section, set one of its keys: {valid}")
    if len(parts) == 1:  # task / preset name what the sections mean; they come with the preset
        raise UserError(f"{dotted!r} cannot be overridden: it comes from the preset (choose another preset)")
    setattr(obj, f.name, parse_value(raw, _field_type(obj, f), dotted))


def switch_dataset(cfg: Config, name: str, carry: dict[str, str]) -> None:
    """`data.name=name`: the current dataset keeps its values; another starts from its defaults, then takes each
    `carry` override (`data.*` values given before, as written), which it must have."""
    if name not in DATASETS:
        raise unknown_dataset(name)
    if type(cfg.data) is DATASETS[name].options and cfg.data.name == name:
        return
    cfg.data = DATASETS[name].options()
    own = {f.name for f in dataclasses.fields(cfg.data)}
    for key, raw in carry.items():
        if key.split(".", 1)[1] not in own:
            raise UserError(f"{key} was set before data.name={name}, but the {name} dataset has no such key; "
                            f"it has {', '.join(_valid_keys(cfg.data, 'data'))}")
        set_field(cfg, key, raw)


def _unknown_key(obj: Any, path: list[str], dotted: str) -> UserError:
    """The error for `dotted` not found in `obj` (reached by `path`): the valid keys and a close match, or for a
    data key that other datasets have, their names."""
    prefix = ".".join(path)
    keys = _valid_keys(obj, prefix)
    close = difflib.get_close_matches(dotted, keys, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    where = prefix or "the config"
    if path == ["data"] and isinstance(getattr(obj, "name", None), str):
        where = f"the {obj.name} dataset"
        leaf = dotted.split(".")[1]
        others = [n for n, e in DATASETS.items() if leaf in {f.name for f in dataclasses.fields(e.options)}]
        if others:
            hint = f"it is an option of {', '.join(others)} (set data.name first); "
    return UserError(f"unknown key {dotted!r}: {hint}{where} has {', '.join(keys)}")


def _valid_keys(obj: Any, prefix: str) -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        name = f"{prefix}.{f.name}" if prefix else f.name
        sub = getattr(obj, f.name)
        out.extend(_valid_keys(sub, name) if dataclasses.is_dataclass(sub) else [name])
    return out


def _field_type(obj: Any, f: dataclasses.Field) -> Any:
    hints = typing.get_type_hints(type(obj))
    tp = hints.get(f.name, f.type)
    if tp is Any:  # untyped: take the current value's type
        tp = type(getattr(obj, f.name))
    return tp


def parse_value(raw: str, tp: Any, name: str) -> Any:
    """Parse `raw` as type `tp` (bool, int, float, str, Optional[...], tuple[...]); UserError says what was expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return parse_value(raw, args[0], name)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        items = [s for s in raw.strip("()[] ").split(",") if s.strip()]
        inner = args[0] if args else str
        vals = [parse_value(s.strip(), inner, name) for s in items]
        return tuple(vals) if origin is tuple else vals
    if tp is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{name} expects a bool (true/false), got {raw!r}")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            try:
                v = float(raw)
            except ValueError:
                v = math.nan
            if v.is_integer():
                return int(v)
            raise UserError(f"{name} expects an int, got {raw!r}") from None
    if tp is float:
        try:
            v = float(raw)
        except ValueError:
            raise UserError(f"{name} expects a float, got {raw!r}") from None
        if not math.isfinite(v):
            raise UserError(f"{name} expects a finite float, got {raw!r}")
        return v
    if tp is str:
        return raw
    raise UserError(f"{name} has type {tp} which cannot be set from the command line")


def _load_into(obj: Any, d: dict, prefix: str, source: str) -> None:
    if not isinstance(d, dict):
        raise UserError(f"{source}: section {prefix or 'root'} must be an object, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else k
        if k not in fields:
            raise UserError(f"{source} has an unknown key {name!r}")
        cur = getattr(obj, k)
        if name == "data":
            setattr(obj, k, _load_data(v, source))
        elif dataclasses.is_dataclass(cur):
            _load_into(cur, v, name, source)
        else:
            setattr(obj, k, check_json_value(v, _field_type(obj, fields[k]), name, source))


def _load_data(d: Any, source: str) -> Any:
    """The data section of a config.json, as the options class of `d["name"]`. Keys of the old shared DataConfig
    that this dataset lacks are dropped when they hold the old defaults, and are an error otherwise."""
    if not isinstance(d, dict):
        raise UserError(f"{source}: section data must be an object, got {type(d).__name__}")
    name = d.get("name", DEFAULT_DATASET)
    if not isinstance(name, str) or name not in DATASETS:
        raise UserError(f"{source}: data.name={_short(name)} is not one of: {', '.join(DATASETS)}")
    opts = DATASETS[name].options()
    own = {f.name for f in dataclasses.fields(opts)}
    for k, v in d.items():
        old = LEGACY_DEFAULTS.get(k)
        if k not in own and k in LEGACY_DEFAULTS and (type(v) is not type(old) or v != old):
            raise UserError(f"{source}: data.{k}={_short(v)} is not an option of the {name} dataset (a config.json "
                            f"from before per-dataset options may hold it only with its old default {old!r})")
    _load_into(opts, {k: v for k, v in d.items() if k in own or k not in LEGACY_DEFAULTS}, "data", source)
    return opts


def check_json_value(v: Any, tp: Any, name: str, source: str = "config.json") -> Any:
    """A value read from config.json, checked against the field's type (JSON lists become tuples where declared)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if v is None else check_json_value(v, args[0], name, source)
    if origin in (tuple, list):
        if not isinstance(v, list):
            raise UserError(f"{source}: {name} should be a list, got {_short(v)}")
        args = typing.get_args(tp)
        items = [check_json_value(x, args[0] if args else Any, name, source) for x in v]
        return tuple(items) if origin is tuple else items
    ok = {bool: lambda x: isinstance(x, bool),
          int: lambda x: isinstance(x, int) and not isinstance(x, bool),
          float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
          str: lambda x: isinstance(x, str)}
    if tp in ok and not ok[tp](v):
        raise UserError(f"{source}: {name} should be {tp.__name__}, got {_short(v)}")
    return float(v) if tp is float else v


def _short(v: Any, limit: int = 60) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "..."
