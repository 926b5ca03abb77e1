"""The datasets: `DATASETS[name] = DatasetEntry(options, load)`; a new dataset is one module and one line here.

`options` is the dataclass of the dataset's `data.*` settings: a `name` field (defaulting to the registry key),
the dataset's own fields, and `check()` raising UserError for a value out of range. `load(options, split)` returns
a `Dataset`. `unigen.config` builds the `data` section from this registry and names no dataset itself.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from unigen.data.dataset import Dataset, check_split
from unigen.data.images import DigitsData, MnistData, load_digits, load_mnist
from unigen.data.pixels import MnistPixelsData, load_mnist_pixels
from unigen.data.scenes import ScenesData, load_scenes
from unigen.data.shapes import ShapesData, load_shapes
from unigen.data.stream import StreamData, load_stream
from unigen.data.text import TextData, load_text
from unigen.data.toy2d import Toy2dData, load_toy2d
from unigen.data.words import WordsData, load_words
from unigen.errors import UserError


class DatasetEntry(NamedTuple):
    options: type                                  # dataclass of the data.* fields, with check()
    load: Callable[[Any, str], Dataset]            # (options, split) -> Dataset


def unknown_dataset(name: Any) -> UserError:
    return UserError(f"data.name={name!r} is not one of: {', '.join(DATASETS)}")


def entry_of(opts: Any) -> DatasetEntry:
    """The registry entry of an options object; UserError unless it is an instance of its dataset's class."""
    name = getattr(opts, "name", None)
    if not isinstance(name, str) or name not in DATASETS:
        raise unknown_dataset(name)
    entry = DATASETS[name]
    if type(opts) is not entry.options:
        raise UserError(f"data.name={name!r} needs {entry.options.__name__} options, got {type(opts).__name__}")
    return entry


def make_options(name: str = "", **fields: Any) -> Any:
    """`name`'s options dataclass with `fields` set (name "" = the default dataset); UserError for an unknown
    dataset or a field it does not have. Presets written as `DataConfig(name=..., ...)` come through here."""
    name = name or DEFAULT_DATASET
    if not isinstance(name, str) or name not in DATASETS:
        raise unknown_dataset(name)
    cls = DATASETS[name].options
    own = cls.__dataclass_fields__
    bad = [k for k in fields if k not in own]
    if bad:
        raise UserError(f"dataset {name!r} has no option {bad[0]!r}; it has {', '.join(own)}")
    return cls(name=name, **fields)


def load(opts: Any, split: str) -> Dataset:
    """The `split` ("train" | "test") of the dataset that `opts` (e.g. `MnistData()`, or `cfg.data`) describes."""
    check_split(split)
    return entry_of(opts).load(opts, split)


DATASETS: dict[str, DatasetEntry] = {
    "toy2d": DatasetEntry(Toy2dData, load_toy2d),
    "digits": DatasetEntry(DigitsData, load_digits),
    "mnist": DatasetEntry(MnistData, load_mnist),
    "text": DatasetEntry(TextData, load_text),
    "shapes": DatasetEntry(ShapesData, load_shapes),
    "words": DatasetEntry(WordsData, load_words),
    "mnist-pixels": DatasetEntry(MnistPixelsData, load_mnist_pixels),
    "scenes": DatasetEntry(ScenesData, load_scenes),
    "stream": DatasetEntry(StreamData, load_stream),
}
DEFAULT_DATASET = "toy2d"

# The one DataConfig that every dataset shared before each had its own options, with its defaults. A config.json
# written then holds all of these; `Config.from_dict` drops those the dataset lacks when they hold these values.
LEGACY_DEFAULTS: dict[str, Any] = {"toy": "moons", "n_train": 0, "path": "", "tokenizer": "byte", "vocab_size": 512,
                                   "seq_len": 128, "image_size": 0, "seed": 0}
