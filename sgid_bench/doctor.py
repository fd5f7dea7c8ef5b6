"""``sgid-bench doctor``: is this machine ready for a profile's runs?

One table of every model and dataset the profile needs, each found / missing /
incomplete / wrong architecture / replica, with the exact command that fetches a missing
one on a connected machine; then the device (CUDA, fp16 / bf16) and the free disk of the
generation cache. Exits non-zero when something needed is missing or unusable.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sgid_bench.options import context_options, make_context

if TYPE_CHECKING:
    from sgid_bench.context import Context

#: The paper's datasets (its Table 1), in the paper sweep's order.
PAPER_DATASETS = ("cifar100", "cifar10", "caltech101", "stanford_cars", "flowers102",
                  "oxford_pets", "dtd")
#: States that make ``doctor`` exit non-zero.
BAD = ("missing", "incomplete", "wrong")
#: Free disk below which the generation cache is flagged (the paper sweep's generated
#: images are a few GB; a full-size replica set is ~13 GB).
LOW_DISK_GB = 20.0


@dataclass
class Item:
    kind: str  # "model" | "dataset" | "device" | "disk"
    name: str
    state: str  # found | replica | missing | incomplete | wrong | info
    where: str = ""
    detail: str = ""
    fix: str = ""


def model_items(context: Context) -> list[Item]:
    """One item per paper model id: where it is, its content hash, what is wrong."""
    from sgid_bench.models import (
        PAPER_KINDS,
        architecture_problem,
        content_hash,
        download_command,
        locate_quiet,
        missing_files,
        replica_info,
    )
    from sgid_bench.replicate import paper_model_ids

    items = []
    for mid, roles in paper_model_ids().items():
        kind = PAPER_KINDS[mid]
        folder = locate_quiet(mid, kind, context) or _own_folder(mid, context)
        fix = download_command(_hub_repo(mid), context.models_dir)
        item = Item("model", mid, "missing", detail=", ".join(roles), fix=fix)
        if folder is not None:
            item.where = str(folder)
            problem = architecture_problem(folder, kind)
            missing = missing_files(folder, kind)
            if problem:
                item.state, item.detail = "wrong", problem
            elif missing:
                item.state, item.detail = "incomplete", "missing " + ", ".join(missing)
            else:
                digest = content_hash(folder, kind, context)[:16]
                replica = replica_info(folder)
                item.state = "found" if replica is None else "replica"
                item.detail = f"{', '.join(roles)}; weights {digest}"
                item.fix = "" if replica is None else (
                    f"random weights ({replica.get('size')} replica), tests and timing "
                    f"only; the real one: {fix}")
        items.append(item)
    return items


def _own_folder(mid: str, context: Context) -> Path | None:
    # A folder at <models_dir>/<id> that no loader accepts (wrong or half-copied).
    assert context.models_dir is not None
    folder = context.models_dir / mid
    return folder if folder.is_dir() else None


def _hub_repo(mid: str) -> str:
    """The hub repo to download for an id (open_clip ids name their hub repo)."""
    if mid.startswith("ViT-B-32/"):
        import open_clip

        from sgid_bench.openclip import split_id

        repo = open_clip.get_pretrained_cfg(*split_id(mid)).get("hf_hub", "").strip("/")
        return repo or mid
    return mid


def dataset_items(context: Context) -> list[Item]:
    """One item per paper dataset: its files present, or where to put them."""
    from sgid_bench.errors import UserError
    from sgid_bench.plugins import dataset_class

    items = []
    for name in PAPER_DATASETS:
        ds: Any = dataset_class(name)()
        ds.setup(context)
        root = str(getattr(ds, "root", context.data_root))
        try:
            check = getattr(ds, "check_files", None)
            check() if check else ds.class_names()
            items.append(Item("dataset", name, "found", root))
        except UserError as exc:
            hint = getattr(ds, "download_hint", lambda: "")()
            items.append(Item("dataset", name, "missing", root, _first_clause(str(exc)), hint))
    return items


def _first_clause(message: str) -> str:
    return message.split(";")[0]


def device_items(context: Context) -> list[Item]:
    import torch

    if not torch.cuda.is_available():
        return [Item("device", "cuda", "info", "none",
                     "no CUDA device: the paper profile's generation and training are "
                     "GPU work (fp16 generation, bf16 autocast training)",
                     "run on a machine with an NVIDIA GPU (--device cuda)")]
    name = torch.cuda.get_device_name(0)
    bf16 = torch.cuda.is_bf16_supported()
    return [Item("device", "cuda", "found", f"{torch.cuda.device_count()} x {name}",
                 f"fp16 yes, bf16 {'yes' if bf16 else 'no'}")]


def disk_items(context: Context) -> list[Item]:
    assert context.cache_dir is not None
    path = Path(context.cache_dir)
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free / 1e9
    state = "found" if free >= LOW_DISK_GB else "info"
    return [Item("disk", "generation cache", state, str(path), f"{free:.1f} GB free",
                 "" if free >= LOW_DISK_GB else
                 f"less than {LOW_DISK_GB:.0f} GB free: point --cache-dir at a larger disk")]


def diagnose(context: Context) -> list[Item]:
    return [*model_items(context), *dataset_items(context), *device_items(context),
            *disk_items(context)]


_STYLE = {"found": "green", "replica": "yellow", "missing": "red", "incomplete": "red",
          "wrong": "red", "info": "cyan"}


def render(items: list[Item], profile: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"sgid-bench doctor ({profile} profile)")
    for column in ("kind", "name", "state", "where", "detail", "to fix"):
        # Folded, never cut: the fix column is a command to copy.
        table.add_column(column, overflow="fold")
    for it in items:
        table.add_row(it.kind, escape(it.name), f"[{_STYLE[it.state]}]{it.state}[/]",
                      escape(it.where), escape(it.detail), escape(it.fix))
    return table


@click.command("doctor")
@click.option("--profile", type=click.Choice(["paper"]), default="paper", show_default=True,
              help="The profile to check (the quick and tiny profiles need no downloads).")
@context_options
def doctor(profile: str, **ctx: Any) -> None:
    """Check that every model and dataset the profile needs is here and usable, the GPU,
    and free disk; print how to fetch what is missing. Exit 1 when something is."""
    from rich.console import Console

    context = make_context(profile=profile, **ctx)
    items = diagnose(context)
    Console(width=max(160, Console().width), soft_wrap=False).print(render(items, profile))
    bad = [it for it in items if it.state in BAD]
    replicas = [it for it in items if it.state == "replica"]
    if replicas:
        click.echo(f"{len(replicas)} model(s) are replicas (random weights): runs on them are "
                   "marked +replica in the store and are not research results.", err=True)
    if bad:
        # Once more unwrapped, one per line: commands to copy, whatever the terminal width.
        click.echo("\nTo fix:")
        for it in bad:
            click.echo(f"  {it.name}: {it.fix or it.detail}")
        raise click.ClickException(
            f"{len(bad)} of {len(items)} item(s) missing or unusable: "
            f"{', '.join(it.name for it in bad)}; the 'to fix' column says how")
    click.echo("everything the paper profile needs is here", err=True)
