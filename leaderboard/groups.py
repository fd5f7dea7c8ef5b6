"""Which leaderboard group a method belongs to: backbone, perturbation, generative or
combined (``a+b``), as its Augmenter class says (``group``), with a fallback for methods
whose plugin is not installed here (results can come from another machine's store)."""

from __future__ import annotations

from functools import lru_cache

from sgid_bench.errors import UserError

GROUP_ORDER = ("backbone", "perturbation", "generative", "combined", "other")
#: The paper's methods, for stores read where their plugins are not installed.
KNOWN_GROUPS = {
    "none": "backbone",
    "random_erasing": "perturbation",
    "cutmix": "perturbation",
    "mixup": "perturbation",
    "moex": "perturbation",
    "randaugment": "perturbation",
    "autoaugment": "perturbation",
    "trivialaugment": "perturbation",
    "augmix": "perturbation",
    "text2img": "generative",
    "sgid": "generative",
    "sgid_diversecaption": "generative",
    "sgid_instructpix2pix": "generative",
}


@lru_cache(maxsize=256)
def method_group(method: str) -> str:
    """The group of ``method``; combinations are always ``combined``."""
    if "+" in method:
        return "combined"
    if method == "none":
        return "backbone"
    group = _plugin_group(method)
    if group:
        return group
    if method in KNOWN_GROUPS:
        return KNOWN_GROUPS[method]
    # Unknown names: generative methods of this field usually say so in their name.
    return "generative" if any(k in method for k in ("sgid", "diffusion", "gen")) else "other"


def _plugin_group(method: str) -> str | None:
    from sgid_bench.plugins import registry

    try:
        cls = registry().get("augmenter", method)
    except (UserError, ImportError):
        # Not installed here (or a broken plugin): the leaderboard still renders.
        return None
    return str(getattr(cls, "group", "") or "") or None


def is_sgid_family(method: str) -> bool:
    """SGID or a variant / combination of it: the methods tested against the best
    baseline."""
    return any(p == "sgid" or p.startswith("sgid_") for p in method.split("+"))
