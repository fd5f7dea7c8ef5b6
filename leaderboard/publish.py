"""Regenerate the published leaderboard (``leaderboard/published/`` in the repository)
from a results store in one command::

    sgid-bench leaderboard --db sqlite:///sweep.db --publish leaderboard/published

or ``python -m sgid_bench.leaderboard.publish [--db URL] [--publish DIR]`` (default
directory: ``leaderboard/published``). It writes README.md
(markdown tables with the figures linked), index.html (self-contained) and the PNGs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sgid_bench.leaderboard.figures import figure_notes, write_figures
from sgid_bench.leaderboard.html import render_html
from sgid_bench.leaderboard.render import md_escape, render_markdown
from sgid_bench.leaderboard.table import Leaderboard

#: Where the repository keeps the published leaderboard of the embedded default.
PUBLISHED = Path(__file__).resolve().parent / "published"

_INTRO = """# sgid-bench leaderboard

The default's leaderboard: the shipped `published` sweep, every method of the paper on the
toy world's `world` dataset (12 shapes, 10 training images per class on 2 contexts, tested
on all 6 contexts), the three backbones (ResNet-50 slim from scratch; ViT and CLIP image
tower pretrained on the world), 5 seeds: 180 runs, 28 minutes on 2 CPU cores with the
generation (Ray, one task per core). Every model (CLIP, BLIP, Stable Diffusion,
InstructPix2Pix, T5, ViT) is the real library class trained at toy scale on a CPU
(`sgid-bench world info` prints their training time and measured quality). The table shows
the SGID mechanism measured end to end, not the paper's numbers. Regenerate with
`bash leaderboard/regenerate.sh`; any store with `sgid-bench leaderboard --db URL --publish
DIR`. Numbers are top-1 accuracy (%) of finished runs; each table's caption names the test,
the seeds and alpha.
"""


def publish(lb: Leaderboard, directory: Path, details: bool = True) -> list[Path]:
    """Write README.md, index.html and the figures of ``lb`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()  # figures of tables that no longer exist must not linger
    pngs = write_figures(lb, directory)
    images = "\n".join([*(f"![{p.stem}]({p.name})" for p in pngs),
                        *(f"\n_{md_escape(n)}._" for n in figure_notes(lb))])
    readme = directory / "README.md"
    readme.write_text(_INTRO + "\n" + render_markdown(lb, details)
                      + ("\n## Figures\n\n" + images + "\n" if images else ""), "utf-8")
    page = directory / "index.html"
    page.write_text(render_html(lb, details), "utf-8")
    return [readme, page, *pngs]


def main(argv: list[str] | None = None) -> None:
    from sgid_bench.leaderboard.command import leaderboard

    args = list(sys.argv[1:] if argv is None else argv)
    if "--publish" not in args:
        args += ["--publish", str(PUBLISHED)]
    leaderboard.main([*args, "--details"])


if __name__ == "__main__":
    main()
