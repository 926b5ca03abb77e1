"""The data section of a Config: each dataset's own options dataclass from the `unigen.data.DATASETS` registry,
its checks, `--data.name` switching, config.json round trips, and loading a config.json written when every
dataset shared one `DataConfig` (all union fields present)."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import unigen.config
from unigen.config import Config, DataConfig, apply_overrides, validate
from unigen.data import (DATASETS, DatasetEntry, Dataset, DigitsData, MnistData, ShapesData, TextData, Toy2dData, load,
                         make_options)
from unigen.data import MnistPixelsData, ScenesData, StreamData
from unigen.data.words import WordsData
from unigen.errors import UserError
from unigen.registry import TASKS, get_preset
from unigen.run import check_resumable, read_config

SRC = Path(unigen.config.__file__).parent


@dataclass
class TinyModel:
    hidden: int = 8


# A valid value different from the default for every field of every dataset.
NON_DEFAULT = {"toy": "rings", "n_train": 300, "path": "notes.txt", "tokenizer": "bpe", "vocab_size": 300,
               "seq_len": 64, "image_size": 16, "seed": 7, "corpus": "stdlib", "min_count": 2, "chunk": 500,
               "max_shapes": 2, "holdout": "red circle",
               "imbalance": 2.0, "train_streams": 5, "test_streams": 3, "stream_len": 50, "noise": 0.1}
# The one DataConfig of every config.json written before datasets had their own options (its defaults).
OLD_DATA = {"name": "mnist", "toy": "moons", "n_train": 0, "path": "", "tokenizer": "byte", "vocab_size": 512,
            "seq_len": 128, "image_size": 0, "seed": 0}


def own_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def error(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


# ---- the registry ---------------------------------------------------------------------------------------------

def test_registry_entries_and_exported_classes():
    assert {n: e.options for n, e in DATASETS.items()} == {"toy2d": Toy2dData, "digits": DigitsData,
                                                           "mnist": MnistData, "text": TextData, "shapes": ShapesData,
                                                           "words": WordsData, "mnist-pixels": MnistPixelsData,
                                                           "scenes": ScenesData, "stream": StreamData}
    for name, entry in DATASETS.items():
        opts = entry.options()
        assert opts.name == name and own_fields(entry.options)[0] == "name"
        opts.check()                                                            # defaults are valid
        assert make_options(name) == opts and callable(entry.load)
    assert own_fields(Toy2dData) == ["name", "toy", "n_train", "seed"]
    assert own_fields(MnistData) == ["name", "image_size"]
    assert own_fields(TextData) == ["name", "path", "tokenizer", "vocab_size", "seq_len"]


def test_compatibility_factory_returns_the_dataset_class():
    assert DataConfig(name="text", tokenizer="byte", seq_len=128) == TextData()
    assert type(DataConfig(name="mnist")) is MnistData and DataConfig() == Toy2dData()
    assert DataConfig(name="toy2d", toy="checkerboard") == Toy2dData(toy="checkerboard")
    msg = error(lambda: DataConfig(name="mnist", toy="rings"))
    assert msg == "dataset 'mnist' has no option 'toy'; it has name, image_size"
    assert error(lambda: DataConfig(name="nope")) == \
        "data.name='nope' is not one of: toy2d, digits, mnist, text, shapes, words, mnist-pixels, scenes, stream"


def test_load_rejects_unknown_or_mismatched_options():
    assert "data.name='nope' is not one of" in error(lambda: load(Toy2dData(name="nope"), "train"))
    msg = error(lambda: load(MnistData(name="digits"), "train"))
    assert msg == "data.name='digits' needs DigitsData options, got MnistData"


@pytest.mark.parametrize("opts,words", [
    (Toy2dData(toy="spiral"), "data.toy='spiral' is not one of: moons, swissroll, 8gaussians, checkerboard, rings"),
    (Toy2dData(n_train=-1), "data.n_train must be >= 0, got -1"),
    (Toy2dData(seed=-1), "data.seed must be in [0, 2147483647], got -1"),
    (DigitsData(image_size=-8), "data.image_size must be >= 0, got -8"),
    (DigitsData(seed=2**31), "data.seed must be in [0, 2147483647], got 2147483648"),
    (MnistData(image_size=-1), "data.image_size must be >= 0, got -1"),
    (TextData(tokenizer="wordpiece"), "data.tokenizer='wordpiece' is not one of: byte, bpe, unigen-bpe"),
    (TextData(tokenizer="bpe", vocab_size=100), "data.vocab_size must be >= 260 for a BPE tokenizer, got 100"),
    (TextData(seq_len=0), "data.seq_len must be > 0, got 0"),
    (ShapesData(n_train=-2), "data.n_train must be >= 0, got -2"),
    (ShapesData(image_size=-1), "data.image_size must be >= 0, got -1"),
    (ShapesData(image_size=8), "data.image_size=8 is too small for shapes; use 0 (32) or at least 16"),
    (ShapesData(seed=-5), "data.seed must be in [0, 2147483647], got -5"),
    (ScenesData(image_size=8), "data.image_size=8 is too small for scenes; use 0 (48) or at least 16"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_each_dataset_checks_its_options(opts, words):
    """The same message from check(), from validate() on a Config holding the options, and from load()."""
    for fn in (opts.check, lambda: validate(Config(model=TinyModel(), data=opts)), lambda: load(opts, "train")):
        assert words in error(fn)


def test_text_vocab_size_only_matters_for_bpe():
    TextData(tokenizer="byte", vocab_size=1).check()


def test_validate_rejects_a_data_section_that_is_not_registered_options():
    cfg = Config(model=TinyModel())
    cfg.data = {"name": "mnist"}
    assert "data.name=None is not one of" in error(lambda: validate(cfg))
    cfg.data = MnistData(name="digits")
    assert "needs DigitsData options, got MnistData" in error(lambda: validate(cfg))
    cfg.data = Toy2dData(n_train="5")
    assert "data.n_train should be int, got '5'" in error(lambda: validate(cfg))


@dataclass
class FakeData:
    name: str = "fake"
    level: int = 3

    def check(self) -> None:
        if self.level > 9:
            raise UserError(f"data.level must be <= 9, got {self.level}")


def test_a_new_dataset_is_one_registry_entry(monkeypatch):
    """Overrides, validation, config.json and load() work for a dataset the config module has never heard of."""
    fake = Dataset({"x": torch.zeros(4, 2)}, {"name": "fake"})
    monkeypatch.setitem(DATASETS, "fake", DatasetEntry(FakeData, lambda opts, split: fake))
    cfg = apply_overrides(Config(model=TinyModel()), ["data.name=fake", "data.level=5"])
    validate(cfg)
    assert cfg.data == FakeData(level=5) and load(cfg.data, "test") is fake
    assert Config.from_dict(json.loads(cfg.to_json()), TinyModel) == cfg
    assert "data.level must be <= 9" in error(lambda: validate(apply_overrides(cfg, ["data.level=10"])))


def test_config_and_data_do_not_name_each_other():
    """config.py names no dataset; the data modules import only tensors / image / tokenizer libraries, the
    standard library, unigen.errors, unigen.io and their own folder (the config imports data, not the reverse)."""
    strings = {n.value for n in ast.walk(ast.parse((SRC / "config.py").read_text())) if isinstance(n, ast.Constant)}
    assert not strings & set(DATASETS)
    allowed = {"torch", "numpy", "PIL", "sklearn", "tokenizers", "regex", "unigen.errors", "unigen.io", "unigen.data"}
    for path in sorted((SRC / "data").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for mod in mods:
                ok = mod.split(".")[0] in sys.stdlib_module_names or mod in allowed or \
                    any(mod.startswith(a + ".") for a in allowed) or mod == "pydoc_data"
                assert ok, f"{path.name} imports {mod}"


# ---- overrides ----------------------------------------------------------------------------------------------

def test_switching_data_name_starts_from_the_new_defaults():
    cfg = apply_overrides(get_preset("toy2d-edm"), ["data.name=mnist"])
    assert cfg.data == MnistData()
    assert dataclasses.asdict(cfg)["data"] == {"name": "mnist", "image_size": 0}
    cfg = apply_overrides(get_preset("mnist-edm"), ["data.name=digits", "data.seed=4", "data.image_size=16"])
    assert cfg.data == DigitsData(image_size=16, seed=4)


def test_naming_the_current_dataset_keeps_its_values():
    cfg = get_preset("toy2d-edm")
    assert cfg.data.toy == "checkerboard"                                       # the preset's choice
    assert apply_overrides(cfg, ["data.n_train=9", "data.name=toy2d"]).data == Toy2dData(toy="checkerboard", n_train=9)


def test_data_overrides_before_a_switch_carry_over():
    cfg = apply_overrides(get_preset("mnist-edm"), ["data.image_size=16", "--data.name=digits"])
    assert cfg.data == DigitsData(image_size=16)
    cfg = apply_overrides(get_preset("toy2d-edm"), ["data.seed=3", "data.name=shapes", "data.name=digits"])
    assert cfg.data == DigitsData(seed=3)


def test_an_override_the_new_dataset_lacks_is_an_error():
    msg = error(lambda: apply_overrides(get_preset("toy2d-edm"), ["data.toy=rings", "data.name=mnist"]))
    assert msg == "data.toy was set before data.name=mnist, but the mnist dataset has no such key; " \
                  "it has data.name, data.image_size"


def test_unknown_data_key_lists_only_the_current_datasets_keys():
    msg = error(lambda: apply_overrides(get_preset("mnist-edm"), ["data.toy=rings"]))
    assert msg == "unknown key 'data.toy': it is an option of toy2d (set data.name first); " \
                  "the mnist dataset has data.name, data.image_size"
    msg = error(lambda: apply_overrides(get_preset("mnist-edm"), ["data.n_train=256"]))   # not 'data.name'
    assert msg == "unknown key 'data.n_train': it is an option of toy2d, shapes, scenes (set data.name first); " \
                  "the mnist dataset has data.name, data.image_size"
    msg = error(lambda: apply_overrides(get_preset("mlp-digits"), ["data.image_sise=4"]))
    assert msg == "unknown key 'data.image_sise': did you mean 'data.image_size'? " \
                  "the digits dataset has data.name, data.image_size, data.seed, data.imbalance"
    msg = error(lambda: apply_overrides(get_preset("text-mdlm"), ["data.colour=red"]))
    assert msg.endswith("the text dataset has data.name, data.path, data.tokenizer, data.vocab_size, data.seq_len")


def test_unknown_dataset_name_is_an_error():
    assert error(lambda: apply_overrides(get_preset("mnist-edm"), ["data.name=imagenet"])) == \
        "data.name='imagenet' is not one of: toy2d, digits, mnist, text, shapes, words, mnist-pixels, scenes, stream"


# ---- config.json --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_round_trips_through_config_json(name):
    cls = DATASETS[name].options
    opts = cls(**{k: NON_DEFAULT[k] for k in own_fields(cls) if k != "name"})
    opts.check()
    cfg = Config(task="t", model=TinyModel(hidden=3), data=opts)
    d = cfg.to_dict()
    assert list(d["data"]) == own_fields(cls) and d == dataclasses.asdict(cfg)
    back = Config.from_dict(json.loads(cfg.to_json()), TinyModel)
    assert back == cfg and type(back.data) is cls


@pytest.mark.parametrize("name", list(DATASETS))
def test_old_format_data_section_loads(name):
    """All nine union fields at their old defaults: the dataset's own are read, the rest carried no meaning."""
    back = Config.from_dict({"data": dict(OLD_DATA, name=name)}, TinyModel)
    assert back.data == DATASETS[name].options()


def test_old_format_data_section_keeps_the_datasets_own_values():
    old = dict(OLD_DATA, name="text", tokenizer="bpe", vocab_size=300, seq_len=64, path="book.txt")
    assert Config.from_dict({"data": old}, TinyModel).data == TextData(path="book.txt", tokenizer="bpe",
                                                                        vocab_size=300, seq_len=64)
    old = dict(OLD_DATA, name="toy2d", toy="rings", n_train=500, seed=2)
    assert Config.from_dict({"data": old}, TinyModel).data == Toy2dData(toy="rings", n_train=500, seed=2)


@pytest.mark.parametrize("key,value,shown", [("toy", "rings", "'rings'"), ("seed", 3, "3"), ("n_train", 0.0, "0.0"),
                                             ("seq_len", None, "None")])
def test_old_format_field_with_a_non_default_value_is_an_error(key, value, shown):
    d = {"data": dict(OLD_DATA, **{key: value})}
    assert error(lambda: Config.from_dict(d, TinyModel, source="run/config.json")) == \
        f"run/config.json: data.{key}={shown} is not an option of the mnist dataset (a config.json from before " \
        f"per-dataset options may hold it only with its old default {OLD_DATA[key]!r})"


def test_data_section_errors_in_config_json():
    def load_data(data):
        return lambda: Config.from_dict({"data": data}, TinyModel)
    assert error(load_data({"name": "imagenet"})) == "config.json: data.name='imagenet' is not one of: toy2d, " \
                                                     "digits, mnist, text, shapes, words, mnist-pixels, scenes, stream"
    assert "data.name=['mnist'] is not one of" in error(load_data({"name": ["mnist"]}))
    assert error(load_data({"name": "mnist", "colour": 1})) == "config.json has an unknown key 'data.colour'"
    assert error(load_data({"name": "mnist", "image_size": "8"})) == \
        "config.json: data.image_size should be int, got '8'"
    assert error(load_data([1])) == "config.json: section data must be an object, got list"
    assert Config.from_dict({"data": {"toy": "rings"}}, TinyModel).data == Toy2dData(toy="rings")   # no name: default


def _old_run(tmp_path: Path, preset: str, **data) -> Path:
    """A run directory whose config.json was written before per-dataset options (the nine union data fields)."""
    d = get_preset(preset).to_dict()
    d["data"] = dict(OLD_DATA, name=d["data"]["name"], **data)
    run = tmp_path / "old_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(d, indent=2))
    return run


def test_old_config_json_file_reads_and_resumes(tmp_path):
    run = _old_run(tmp_path, "mlp-digits", seed=5, image_size=16)
    saved = read_config(run)
    assert saved.data == DigitsData(image_size=16, seed=5) and saved.model == get_preset("mlp-digits").model
    assert TASKS[saved.task].model_config is type(saved.model)
    check_resumable(saved, apply_overrides(get_preset("mlp-digits"), ["data.seed=5", "data.image_size=16"]), run)
    msg = error(lambda: check_resumable(saved, apply_overrides(get_preset("mlp-digits"), ["data.image_size=16"]), run))
    assert msg == f"cannot resume {run} with data.seed=0: the run was trained with 5"
    other = apply_overrides(get_preset("mlp-digits"), ["data.name=shapes"])
    assert re.search(r"with data\.name='shapes': the run was trained with 'digits'",
                     error(lambda: check_resumable(saved, other, run)))
