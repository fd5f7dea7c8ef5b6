"""Failed runs the leaderboard leaves out: how many per backbone, and the `sgid-bench runs`
command that lists exactly them."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Sequence

from sgid_bench.store import FAILED, Store, default_url


def failed_counts(store: Store, *, backbones: Sequence[str] = (), profiles: Sequence[str] = (),
                  methods: Sequence[str] = (), datasets: Sequence[str] = ()) -> Counter[str]:
    """Failed runs per backbone among those the filters select."""
    runs = store.runs(FAILED, backbone=list(backbones) or None, profile=list(profiles) or None,
                      method=list(methods) or None, dataset=list(datasets) or None,
                      on_invalid=lambda *_: None)
    return Counter(r.backbone for r in runs)


def failed_hint(store: Store, *, backbones: Sequence[str] = (), profiles: Sequence[str] = (),
                methods: Sequence[str] = (), datasets: Sequence[str] = ()) -> str:
    """``sgid-bench runs --status failed -b B ...``: the same filters as the leaderboard,
    so the listing shows exactly the runs it counted."""
    args = ["sgid-bench", "runs", "--status", "failed"]
    args += [a for b in backbones for a in ("-b", b)]
    args += [a for p in profiles for a in ("--profile", p)]
    args += [a for m in methods for a in ("-m", m)]
    args += [a for d in datasets for a in ("-d", d)]
    if store.url != default_url():
        args += ["--db", store.display_url]
    return shlex.join(args)
