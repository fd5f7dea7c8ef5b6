"""``sgid-bench leaderboard``: a self-contained click command (the CLI group adds it).

Results go to stdout (or ``-o``), logs to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sgid_bench.errors import UserError

if TYPE_CHECKING:
    from sgid_bench.leaderboard.table import Leaderboard
    from sgid_bench.store import Store

FORMATS = ("table", "markdown", "csv", "latex", "html")


def _render(lb: Leaderboard, fmt: str, details: bool, output: Path | None) -> None:
    from sgid_bench.leaderboard import render
    from sgid_bench.leaderboard.html import render_html

    if fmt == "table":
        if output:
            with output.open("w", encoding="utf-8") as fh:
                render.render_rich(lb, fh, details)
        else:
            render.render_rich(lb, sys.stdout, details)
        return
    makers = {
        "markdown": lambda: render.render_markdown(lb, details),
        "csv": lambda: render.render_csv(lb),
        "latex": lambda: render.render_latex(lb, details),
        "html": lambda: render_html(lb, details),
    }
    text = makers[fmt]()
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@click.command("leaderboard")
@click.option("--db", "db", default=None, metavar="URL",
              help="Results store URL [default: $SGID_BENCH_DB or sqlite:///sgid-bench.db].")
@click.option("--backbone", "-b", "backbones", multiple=True, help="Only this backbone "
              "(repeatable).")
@click.option("--dataset", "-d", "datasets", multiple=True, help="Only this dataset "
              "(repeatable).")
@click.option("--method", "-m", "methods", multiple=True, help="Only this method "
              "(repeatable).")
@click.option("--profile", "profiles", multiple=True, type=click.Choice(["quick", "tiny", "paper"]),
              help="Only runs of this profile (repeatable).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
              show_default=True, help="Output format.")
@click.option("--reference", type=click.Choice(["paper"]), default=None,
              help="Show published numbers beside the measured ones, with the difference.")
@click.option("--details", is_flag=True, help="Add every test: p-values (raw and Holm), "
              "effect sizes, confidence intervals, post-hoc comparisons.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the output to this file instead of stdout (e.g. page.html).")
@click.option("--figures", "figures_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the PNG figures (accuracy, gain heat-map, CD diagram) here.")
@click.option("--publish", "publish_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write README.md + index.html + PNGs here (the published leaderboard).")
@click.option("--select-by", "select_by", type=click.Choice(["val", "none"]), default="val",
              show_default=True,
              help="Settings of a method that differ only in its own parameters (a sweep's "
              "[select] grid, --param sgid.strength=...): val shows per dataset the one with "
              "the best mean validation accuracy and names it; none shows each as a row.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.05, show_default=True, help="Significance level.")
def leaderboard(**options: object) -> None:
    """Tables per backbone (methods x datasets, mean ± std over seeds) with significance
    tests against the plain backbone and the best baseline, ranks and figures.

    --method/--dataset only hide rows and columns: tests, Holm families, best baselines
    and ranks are computed over every stored run of the backbone and profile."""
    try:
        _leaderboard(**options)  # type: ignore[arg-type]
    except UserError as exc:
        raise click.ClickException(str(exc)) from None


def _leaderboard(db: str | None, backbones: tuple[str, ...], datasets: tuple[str, ...],
                 methods: tuple[str, ...], profiles: tuple[str, ...], fmt: str,
                 reference: str | None, details: bool, output: Path | None,
                 figures_dir: Path | None, publish_dir: Path | None, alpha: float,
                 select_by: str) -> None:
    from sgid_bench.leaderboard.table import build
    from sgid_bench.store import Store, default_url

    # Reading only: never create, migrate or write the database (it may be a read-only copy).
    store = Store(db or default_url(), readonly=True)
    try:
        lb = build(store, backbones=backbones, datasets=datasets, methods=methods,
                   profiles=profiles, alpha=alpha, reference=reference, select_by=select_by)
        if not lb.tables:
            raise UserError(f"no finished runs in {store.where} match the filters: run "
                            "`sgid-bench run` or `sgid-bench sweep` first, or relax "
                            "--backbone/--dataset/--method/--profile"
                            + _failed_note(store, backbones, profiles, methods, datasets))
    finally:
        store.close()
    _render(lb, fmt, details, output)
    if output:
        click.echo(f"wrote {output}", err=True)
    if figures_dir:
        from sgid_bench.leaderboard.figures import figure_notes, write_figures

        for path in write_figures(lb, figures_dir):
            click.echo(f"wrote {path}", err=True)
        for note in figure_notes(lb):
            click.echo(f"note: {note}", err=True)
    if publish_dir:
        from sgid_bench.leaderboard.publish import publish

        for path in publish(lb, publish_dir, details=True):
            click.echo(f"wrote {path}", err=True)


def _failed_note(store: Store, backbones: tuple[str, ...], profiles: tuple[str, ...],
                 methods: tuple[str, ...], datasets: tuple[str, ...]) -> str:
    """``; N run(s) failed: sgid-bench runs ...`` when the filters select failed runs:
    they are why nothing finished."""
    from sgid_bench.leaderboard.failed import failed_counts, failed_hint

    filters = {"backbones": backbones, "profiles": profiles, "methods": methods,
               "datasets": datasets}
    failed = sum(failed_counts(store, **filters).values())
    if not failed:
        return ""
    return f"; {failed} run(s) failed: {failed_hint(store, **filters)} lists them"
