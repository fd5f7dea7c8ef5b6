"""The toy world's quality targets (issue 9), measured through the harness's own code.

The world trainers measure their models at the end of training (REPORT.md next to the
weights). This script measures the same targets the way a run uses the models: the
plugins' CLIP scorer, BLIP captioner, Text2Img and SGID methods at the quick profile's
settings, on the ``world`` dataset, every generated image judged by the world's
independent classifier (a small ResNet trained on rendered images only).

    python benchmarks/world/quality.py [--world DIR] [--out benchmarks/world/RESULTS.md]

About 5 minutes on one CPU core. Prints a Markdown table: target, measured, met.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def class_named(caption: str, label: str) -> bool:
    """The caption names the object class (as a word: ``star`` not in ``starry``)."""
    return label in caption.replace(",", " ").split()


def change(outs: Sequence[Any], srcs: Sequence[Any]) -> float:
    """Mean absolute pixel change (0-255) of generated images from their sources."""
    return float(np.mean([np.abs(np.asarray(o, float) - np.asarray(s, float)).mean()
                          for o, s in zip(outs, srcs, strict=True)]))


def measure(world_dir: Path | None, cache: Path) -> list[tuple[str, str, float, bool]]:
    from sgid_bench.context import Context
    from sgid_bench.world.build import world_component, world_id
    from sgid_bench.world.train_judge import load_judge
    from sgid_bench_plugins.captioning import zero_shot_correct
    from sgid_bench_plugins.datasets_world import World
    from sgid_bench_plugins.gen_baselines import Text2Img
    from sgid_bench_plugins.sgid import SGID

    torch.set_num_threads(1)
    context = Context(profile="quick", cache_dir=cache, world_dir=world_dir)
    judge = load_judge(world_component(world_id("judge", context), context))
    data = World()
    names = data.class_names()
    train, test = data.load("train"), data.load("test")
    test_images = [im for im, _ in test.samples]
    test_labels = [y for _, y in test.samples]
    rows = []

    sgid = SGID(**SGID.profile_params("quick", "world"))
    sgid.setup(context)
    clip = sgid._model("clip")
    correct = zero_shot_correct(clip, test_images, test_labels, names, sgid.label_template)
    rows.append(("CLIP zero-shot top-1 on the world test set (%)", ">= 80",
                 100 * float(np.mean(correct)), float(np.mean(correct)) >= 0.80))

    captions = [c[0] for c in sgid._model("captioner").beam(test_images, 1, sgid.num_beams)]
    named = np.mean([class_named(c, names[y]) for c, y in zip(captions, test_labels, strict=True)])
    rows.append(("BLIP beam caption names the class, world test set (%)", ">= 90",
                 100 * float(named), float(named) >= 0.90))

    text2img = Text2Img(**{**Text2Img.profile_params("quick", "world"),
                           "template": "A picture of a {label}",
                           "language_enhancement": False})
    text2img.setup(context)
    labels = [y for y in range(len(names)) for _ in range(10)]
    blank = [train.samples[0][0]] * len(labels)  # Text2Img uses only the label and size
    drawn = text2img.expand(blank, labels, names, torch.Generator().manual_seed(0))
    acc = float(np.mean(judge(drawn) == np.array(labels)))
    rows.append(("Text2Img 'A picture of a {label}': judged as the label (%)", ">= 80",
                 100 * acc, acc >= 0.80))

    srcs = [im for im, _ in train.samples]
    src_labels = [y for _, y in train.samples]
    outs = sgid.expand(srcs, src_labels, names, torch.Generator().manual_seed(0))
    kept = float(np.mean(judge(outs) == np.array(src_labels)))
    rows.append(("SGID img2img, strength 0.5: class kept (judged, %)", ">= 90",
                 100 * kept, kept >= 0.90))
    moved = change(outs, srcs)
    rows.append(("SGID img2img, strength 0.5: mean absolute pixel change (0-255)",
                 "> 0 (images change)", moved, moved > 1.0))
    return rows


def table(rows: Sequence[tuple[str, str, float, bool]], header: str) -> str:
    lines = [header, "", "| target | wanted | measured | met |", "|---|---|---:|---|"]
    lines += [f"| {name} | {want} | {value:.1f} | {'yes' if ok else 'NO'} |"
              for name, want, value, ok in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=None,
                        help="a world build (default: the shipped one)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sgid-bench-world-quality"))
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = measure(args.world, args.cache)
    from sgid_bench.context import Context
    from sgid_bench.world.build import read_manifest

    world = Context(profile="quick", world_dir=args.world).world_dir
    assert world is not None
    digests = {k: v["digest"][:12] for k, v in read_manifest(world)["components"].items()}
    header = ("Toy-world quality targets measured through the harness (quick profile "
              f"settings, `world` dataset) in {time.perf_counter() - start:.0f} s; world "
              "components: " + ", ".join(f"{k} @{d}" for k, d in digests.items()) + ".")
    text = table(rows, header)
    print(text)
    if args.out:
        args.out.write_text("# Toy world: quality targets\n\n" + text)


if __name__ == "__main__":
    main()
