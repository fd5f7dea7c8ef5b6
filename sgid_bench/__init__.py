"""sgid-bench: a benchmark harness for image data augmentation.

Public plugin API: :class:`Augmenter`, :class:`Backbone`, :class:`Dataset`,
:data:`hookimpl` (see ``sgid_bench.hookspecs`` for the hooks).
"""

from __future__ import annotations

__version__ = "0.1.0"

from sgid_bench.api import Augmenter, Backbone, Dataset, FeatureLayer, Recipe, Split
from sgid_bench.errors import UserError
from sgid_bench.hookspecs import hookimpl

__all__ = [
    "Augmenter",
    "Backbone",
    "Dataset",
    "FeatureLayer",
    "Recipe",
    "Split",
    "UserError",
    "__version__",
    "hookimpl",
]
