"""Fuzzing the config surface: any override string, CLI token list or config.json content ends in a valid Config
or a UserError, never another exception; a valid Config survives the round trip through config.json."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unigen.cli import parse_overrides
from unigen.config import Config, apply_overrides, validate
from unigen.errors import UserError
from unigen.registry import PRESETS, TASKS, get_preset

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def leaf_keys(obj, prefix="") -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        name = f"{prefix}.{f.name}" if prefix else f.name
        v = getattr(obj, f.name)
        out += leaf_keys(v, name) if dataclasses.is_dataclass(v) else [name]
    return out


PRESET_NAMES = sorted(PRESETS)
KEYS = sorted({k for p in PRESET_NAMES for k in leaf_keys(get_preset(p))})
SPECIAL_VALUES = ["", " ", "0", "-0", "1", "-1", "2.5", "1e400", "-1e400", "nan", "inf", "-inf", "NaN", "1e-320",
                  "true", "False", "yes", "none", "null", "0x10", "1_000", " 7 ", "٣", "1e20",
                  "9" * 40, "-" + "9" * 40,
                  "[1, 2]", "(3,)", "1,2", "=", "==", "a=b", "\x00", "\n", "é", "\ud800", "moons", "digits", "text",
                  "bpe", "byte", "bf16", "fp32", "skip", "stop", "constant", "cosine", "mlp", "vit"]

keys = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k + ".x"),
    st.sampled_from(KEYS).map(lambda k: k.upper()),
    st.sampled_from(KEYS).map(lambda k: k.split(".")[0]),
    st.text(max_size=20),
    st.lists(st.text(alphabet="abcdemnoprstx_.", min_size=0, max_size=8), min_size=1, max_size=4).map(".".join),
)
values = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30),
)


def outcome(fn) -> str:
    """'ok' or 'user-error'; anything else propagates and fails the test."""
    try:
        fn()
    except UserError as e:
        assert len(str(e).strip().splitlines()) == 1, f"not a one-line message: {str(e)!r}"
        return "user-error"
    return "ok"


def round_trip(cfg: Config) -> None:
    text = cfg.to_json()
    back = Config.from_dict(json.loads(text), TASKS[cfg.task].model_config)
    validate(back)
    assert back == cfg or _nan_equal(back.to_dict(), cfg.to_dict())


def _nan_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@FUZZ
@given(preset=st.sampled_from(PRESET_NAMES), pairs=st.lists(st.tuples(keys, values), min_size=1, max_size=4))
def test_overrides_give_valid_config_or_user_error(preset, pairs):
    cfg = get_preset(preset)

    def apply():
        apply_overrides(cfg, [f"{k}={v}" for k, v in pairs])
        validate(cfg)

    if outcome(apply) == "ok":
        round_trip(cfg)


@FUZZ
@given(preset=st.sampled_from(PRESET_NAMES), key=st.sampled_from(KEYS), value=values)
def test_every_key_with_any_value(preset, key, value):
    """The same, concentrated on real keys, so every field's parser and range check is hit."""
    cfg = get_preset(preset)
    if outcome(lambda: (apply_overrides(cfg, [f"{key}={value}"]), validate(cfg))) == "ok":
        round_trip(cfg)


tokens = st.one_of(st.sampled_from(["--train.steps=3", "--train.steps", "3", "--", "-x", "--a.b", "--a.b=", "=",
                                    "--=1", "--.=", "--train.lr", "-1", "--model.hidden=8"]),
                   st.text(max_size=12))


@FUZZ
@given(argv=st.lists(tokens, max_size=6))
def test_cli_override_tokens_parse_or_user_error(argv):
    result = []
    if outcome(lambda: result.extend(parse_overrides(argv))) == "ok":
        assert all("=" in item for item in result)
        cfg = get_preset("mlp-digits")
        outcome(lambda: (apply_overrides(cfg, result), validate(cfg)))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                                     st.floats(allow_nan=True), st.text(max_size=10)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=6)


@FUZZ
@given(preset=st.sampled_from(PRESET_NAMES), edits=st.lists(st.tuples(st.sampled_from(KEYS + ["task", "junk"]),
                                                                       st.booleans(), json_values), max_size=3))
def test_config_json_gives_valid_config_or_user_error(preset, edits):
    """A config.json with fields replaced by arbitrary JSON (or deleted) loads as a Config or is a UserError."""
    d = copy.deepcopy(get_preset(preset).to_dict())
    for key, delete, value in edits:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if delete:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    text = json.dumps(d)  # what the file holds

    def load():
        from unigen.run import get_task
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("task"), str):
            raise UserError("not a unigen config")
        cfg = Config.from_dict(raw, get_task(raw["task"]).model_config)
        validate(cfg)
        round_trip(cfg)

    outcome(load)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_is_valid_and_round_trips(preset):
    cfg = get_preset(preset)
    validate(cfg)
    round_trip(cfg)
