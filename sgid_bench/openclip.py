"""Loading OpenCLIP models offline: shared by the ``clip_vit`` backbone and SGID's CLIP
caption filter.

Model ids: ``tiny/open_clip`` (the tiny preset of :mod:`sgid_bench.tiny_vision`),
``world/clip@<digest>`` (the toy world's trained CLIP, same layout) or
``<open_clip model name>/<pretrained tag>``, e.g. ``ViT-B-32/laion2b_s34b_b79k``. A real
id is found, in order, as a local folder ``<id>``, ``<models_dir>/<id>``,
``<models_dir>/<hub repo>`` or the Hugging Face cache of the tag's hub repo
(``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.models import (
    base_id,
    check_folder,
    hf_cached,
    is_tiny,
    is_world,
    missing_model,
    resolve,
)

if TYPE_CHECKING:
    import torch

#: The hub-style layout: config + weights, loadable with open_clip's ``local-dir:`` schema.
CONFIG_FILE = "open_clip_config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def load_open_clip(model_id: str, context: Context,
                   device: str | None = None) -> tuple[torch.nn.Module, Any, Any]:
    """``(model, preprocess, tokenizer)`` for ``model_id``; the model is in eval mode on
    ``device`` (default ``context.device``), ``preprocess`` the evaluation transform (PIL
    image -> normalised tensor) and ``tokenizer`` maps a list of strings to token ids.

    Raises :class:`UserError` when the id is malformed or its weights are not available
    offline (saying how to get them)."""
    import open_clip

    device = device or context.device
    folder = locate(model_id, context)
    if (folder / CONFIG_FILE).is_file():
        spec = f"local-dir:{folder}"
        model, _, preprocess = open_clip.create_model_and_transforms(spec, device=device)
        tokenizer = open_clip.get_tokenizer(spec)
    else:
        # A folder holding just the checkpoint file: the architecture comes from the name.
        name, pretrained_cfg = _known(base_id(model_id))
        # A file path (unlike a tag) carries no preprocessing: take the tag's.
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(_weights(folder)), device=device,
            force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)),
            image_mean=pretrained_cfg.get("mean"), image_std=pretrained_cfg.get("std"),
            image_interpolation=pretrained_cfg.get("interpolation"),
            image_resize_mode=pretrained_cfg.get("resize_mode"))
        tokenizer = open_clip.get_tokenizer(name)
    return model.eval(), preprocess, tokenizer


def locate(model_id: str, context: Context, role: str = "CLIP model") -> Path:
    """The local folder holding ``model_id``'s weights (tiny presets are built on first
    use); raises :class:`UserError` saying how to get a missing model, or naming ``role``
    and the folder when it holds another architecture or an incomplete copy."""
    if is_tiny(model_id) or is_world(model_id):
        return resolve(model_id, context)
    model_id = base_id(model_id)  # a pinned id (<id>@<digest>) loads the same folder
    _, pretrained_cfg = _known(model_id)
    return _find(model_id, pretrained_cfg, context, role)


def split_id(model_id: str) -> tuple[str, str]:
    """``"ViT-B-32/laion2b_s34b_b79k"`` -> ``("ViT-B-32", "laion2b_s34b_b79k")``."""
    name, sep, tag = model_id.partition("/")
    if not sep or not name or not tag:
        raise UserError(f"open_clip model id {model_id!r} must be <model name>/<pretrained "
                        "tag>, e.g. ViT-B-32/laion2b_s34b_b79k (see open_clip.list_pretrained())")
    return name, tag


def _known(model_id: str) -> tuple[str, dict[str, Any]]:
    import open_clip

    name, tag = split_id(model_id)
    if name not in open_clip.list_models():
        raise UserError(f"open_clip has no model {name!r} (in {model_id!r}); "
                        "see open_clip.list_models()")
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise UserError(f"open_clip model {name!r} has no pretrained tag {tag!r}; "
                        f"known tags: {tags}")
    return name, cfg


def _find(model_id: str, pretrained_cfg: dict[str, Any], context: Context, role: str) -> Path:
    assert context.models_dir is not None
    repo = pretrained_cfg.get("hf_hub", "").strip("/")
    candidates = [Path(model_id).expanduser(), context.models_dir / model_id]
    if repo:
        candidates.append(context.models_dir / repo)
    for folder in candidates:
        if folder.is_dir() and _weights(folder) is not None:
            return folder
    # The user's own folder of this id that does not load: say why, not "missing".
    for folder in candidates[:2]:
        if folder.is_dir() and any(folder.iterdir()):
            check_folder(folder, "open_clip", role, repo or model_id, context.models_dir)
    snapshot = hf_cached(repo) if repo else None
    if snapshot is not None and _weights(snapshot) is not None:
        return snapshot
    how = missing_model(repo or model_id, context)
    raise UserError(f"CLIP model {model_id!r}: {how}")


def _weights(folder: Path) -> Path | None:
    """The open_clip checkpoint in ``folder`` (open_clip's own names first), or None."""
    preferred = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                 "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth"]
    for file_name in preferred:
        if (folder / file_name).is_file():
            return folder / file_name
    if (folder / CONFIG_FILE).is_file():
        return None  # a hub folder without the open_clip checkpoint (e.g. only HF weights)
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return files[0] if len(files) == 1 else None
