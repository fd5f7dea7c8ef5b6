"""Published reference numbers (the SGID paper's Table 1), shipped inside the package.

The CSV is read with :mod:`importlib.resources`, so it works from a wheel or a zip as well
as from a source checkout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

from sgid_bench.errors import UserError

#: ``--reference`` name -> CSV file under ``reference/``.
SOURCES = {"paper": "sgid_paper_table1.csv"}
#: The paper's column order, used to order dataset columns everywhere.
PAPER_DATASETS = (
    "cifar100", "cifar10", "caltech101", "stanford_cars", "flowers102", "oxford_pets", "dtd",
)
#: The paper's row order (Table 1), used to order methods within their group.
PAPER_METHODS = (
    "none", "random_erasing", "cutmix", "moex", "randaugment", "text2img", "sgid",
    "sgid_diversecaption", "sgid_instructpix2pix", "sgid+moex", "sgid+randaugment",
    "text2img+sgid",
)
AVERAGE = "average"


@dataclass(frozen=True)
class RefValue:
    """One published top-1 accuracy (%) and whether the source marks it significant."""

    accuracy: float
    significant: bool


#: (backbone, method, dataset) -> value; dataset ``average`` is the source's own average.
Reference = dict[tuple[str, str, str], RefValue]


def load_reference(name: str) -> Reference:
    """The reference table ``name`` (``paper``).

    Raises :class:`UserError` for an unknown name."""
    if name not in SOURCES:
        raise UserError(
            f"unknown reference {name!r}; known references: {', '.join(sorted(SOURCES))}"
        )
    text = resources.files(__package__).joinpath("reference", SOURCES[name]).read_text("utf-8")
    out: Reference = {}
    for row in csv.DictReader(text.splitlines()):
        key = (row["backbone"], row["method"], row["dataset"])
        out[key] = RefValue(float(row["accuracy"]), row.get("significant_p05", "0") == "1")
    return out


def filter_reference(
    ref: Reference,
    backbones: tuple[str, ...] = (),
    methods: tuple[str, ...] = (),
    datasets: tuple[str, ...] = (),
) -> Reference:
    """The entries passing the same filters as measured runs (empty filter = all).

    The ``average`` column survives a dataset filter only when no dataset filter is given:
    the published average is over all seven datasets, not over a subset."""
    def keep(value: str, allowed: tuple[str, ...]) -> bool:
        return not allowed or value in allowed

    return {
        (b, m, d): v for (b, m, d), v in ref.items()
        if keep(b, backbones) and keep(m, methods)
        and (keep(d, datasets) if d != AVERAGE else not datasets)
    }
