"""The built-in backbones (resnet50, vit, clip_vit), their tiny presets and open_clip loading."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sgid_bench.api import Backbone
from sgid_bench.context import Context
from sgid_bench.errors import UserError
from sgid_bench.models import ensure_tiny, resolve
from sgid_bench.openclip import load_open_clip
from sgid_bench.plugins import backbone_class, registry

NAMES = ("resnet50", "vit", "clip_vit")
TRANSFORMERS = ("vit", "clip_vit")


@pytest.fixture
def quick() -> Context:
    return Context(profile="tiny")


@pytest.fixture
def paper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    # An empty models dir and Hugging Face cache: no real weights anywhere.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return Context(profile="paper", dataset="cifar10", models_dir=tmp_path / "models")


def make(name: str, **params: str) -> Backbone:
    return backbone_class(name)(**params)


def batch(backbone: Backbone, context: Context, n: int = 4) -> torch.Tensor:
    size = backbone.input_size(context)
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_registered_by_the_sgid_bench_package() -> None:
    entries = registry().entries["backbone"]
    assert {n: entries[n].package for n in NAMES} == {n: "sgid-bench" for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_gives_logits_per_class(name: str, quick: Context) -> None:
    backbone = make(name)
    model = backbone.build(7, quick)
    logits = model(batch(backbone, quick))
    assert logits.shape == (4, 7)
    logits.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in backbone.trainable_parameters(model)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_feature_layer_is_called_in_forward_with_channels_where_stated(
        name: str, quick: Context) -> None:
    backbone = make(name)
    model = backbone.build(3, quick)
    layer = backbone.feature_layer(model)
    seen: list[torch.Tensor] = []
    handle = layer.module.register_forward_hook(lambda _m, _a, out: seen.append(out))
    model(batch(backbone, quick, n=2))
    handle.remove()
    assert len(seen) == 1
    out = seen[0]
    assert isinstance(out, torch.Tensor)
    assert out.shape[0] == 2
    expected_dims = 4 if layer.channel_dim == 1 else 3  # NCHW or N x L x D
    assert out.dim() == expected_dims


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_linear_probe_trains_only_the_head(name: str, quick: Context) -> None:
    backbone = make(name, mode="linear_probe")
    model = backbone.build(5, quick)
    trainable = backbone.trainable_parameters(model)
    head = model.model.classifier if name == "vit" else model.head
    assert {id(p) for p in trainable} == {id(p) for p in head.parameters()}
    head_ids = {id(p) for p in head.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    loss = model(batch(backbone, quick)).logsumexp(dim=1).mean()
    loss.backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    head_names = {k for k, p in model.named_parameters() if id(p) in head_ids}
    assert changed == head_names


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_finetune_trains_everything(name: str, quick: Context) -> None:
    backbone = make(name)
    model = backbone.build(5, quick)
    assert len(backbone.trainable_parameters(model)) == len(list(model.parameters()))


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_unknown_mode_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="mode=linear_probe"):
        make(name, mode="frozen")


@pytest.mark.parametrize(("name", "model_id"), [
    ("vit", "google/vit-base-patch16-224-in21k"),
    ("clip_vit", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
])
def test_paper_profile_without_weights_says_how_to_get_them(
        name: str, model_id: str, paper: Context) -> None:
    for call in (make(name).setup, lambda c: make(name).build(10, c)):
        with pytest.raises(UserError) as err:
            call(paper)
        message = str(err.value)
        assert model_id in message
        assert f"hf download {model_id}" in message
        assert "\n" not in message


def test_paper_vit_loads_real_id_from_models_dir(paper: Context, quick: Context) -> None:
    # Stand the tiny checkpoint in for the real one: the paper path is the same code.
    assert paper.models_dir is not None
    target = paper.models_dir / "google/vit-base-patch16-224-in21k"
    shutil.copytree(resolve("tiny/vit", quick), target)
    model = make("vit").build(6, paper)
    weights = load_file(str(target / "model.safetensors"))
    key = next(k for k in weights if k.endswith("patch_embeddings.projection.weight"))
    assert torch.equal(model.model.vit.embeddings.patch_embeddings.projection.weight,
                       weights[key])
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 6)


def test_paper_clip_loads_real_id_from_models_dir(paper: Context, quick: Context) -> None:
    assert paper.models_dir is not None
    target = paper.models_dir / "ViT-B-32/laion2b_s34b_b79k"
    shutil.copytree(resolve("tiny/open_clip", quick), target)
    model = make("clip_vit").build(6, paper)
    weights = load_file(str(target / "open_clip_model.safetensors"))
    assert torch.equal(model.visual.conv1.weight, weights["visual.conv1.weight"])


@pytest.mark.parametrize(("preset", "weights"), [
    ("vit", "model.safetensors"),
    ("open_clip", "open_clip_model.safetensors"),
])
def test_tiny_presets_are_deterministic(preset: str, weights: str, tmp_path: Path) -> None:
    torch.manual_seed(123)  # the global RNG state must not matter
    first = load_file(str(ensure_tiny(preset, tmp_path / "a") / weights))
    torch.manual_seed(456)
    second = load_file(str(ensure_tiny(preset, tmp_path / "b") / weights))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_vit_is_loaded_from_the_preset_on_disk(quick: Context) -> None:
    weights = load_file(str(resolve("tiny/vit", quick) / "model.safetensors"))
    key = next(k for k in weights if k.endswith("patch_embeddings.projection.weight"))
    for seed in (1, 2):  # different global RNG, same encoder: it comes from the file
        torch.manual_seed(seed)
        model = make("vit").build(4, quick)
        assert torch.equal(model.model.vit.embeddings.patch_embeddings.projection.weight,
                           weights[key])


def test_clip_vit_is_loaded_from_the_preset_on_disk(quick: Context) -> None:
    weights = load_file(str(resolve("tiny/open_clip", quick) / "open_clip_model.safetensors"))
    torch.manual_seed(7)
    model = make("clip_vit").build(4, quick)
    assert torch.equal(model.visual.conv1.weight, weights["visual.conv1.weight"])
    assert model.head.out_features == 4


def test_load_open_clip_tiny_encodes_images_and_text(quick: Context) -> None:
    from PIL import Image

    model, preprocess, tokenizer = load_open_clip("tiny/open_clip", quick)
    assert not model.training
    image = preprocess(Image.new("RGB", (48, 40), (200, 30, 30))).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    tokens = tokenizer(["A picture of a dog, on the grass", "A picture of a cat"])
    assert tokens.shape == (2, 77)
    assert not torch.equal(tokens[0], tokens[1])
    with torch.no_grad():
        image_emb, text_emb = model.encode_image(image), model.encode_text(tokens)
    assert image_emb.shape == (1, 32)
    assert text_emb.shape == (2, 32)


@pytest.mark.parametrize(("model_id", "problem"), [
    ("ViT-B-32", "must be <model name>/<pretrained tag>"),
    ("ViT-B-32/no_such_tag", "no pretrained tag 'no_such_tag'"),
    ("NoSuchNet/laion2b_s34b_b79k", "no model 'NoSuchNet'"),
])
def test_load_open_clip_bad_id_is_a_user_error(
        model_id: str, problem: str, paper: Context) -> None:
    with pytest.raises(UserError, match=problem):
        load_open_clip(model_id, paper)


def test_resnet_quick_has_cifar_stem(quick: Context) -> None:
    backbone = make("resnet50")
    assert backbone.input_size(quick) == 32
    model = backbone.build(10, quick)
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, torch.nn.Identity)
    seen: list[torch.Tensor] = []
    model.layer1.register_forward_hook(lambda _m, _a, out: seen.append(out))
    model(torch.randn(2, 3, 32, 32))
    assert seen[0].shape[-2:] == (32, 32)  # no downsampling before the first stage


def test_resnet_paper_is_torchvision_resnet50_with_stem_by_input_size(paper: Context) -> None:
    from torchvision.models import resnet50

    backbone = make("resnet50")
    reference = sum(p.numel() for p in resnet50(num_classes=10).parameters())
    cifar = backbone.build(10, paper)
    assert backbone.input_size(paper) == 32
    assert cifar.conv1.kernel_size == (3, 3)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    paper.dataset = "caltech101"
    assert backbone.input_size(paper) == 224
    large = backbone.build(10, paper)
    assert (large.conv1.kernel_size, large.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(large.maxpool, torch.nn.MaxPool2d)
    assert sum(p.numel() for p in large.parameters()) == reference
    assert backbone.models_used(paper) == {"backbone": "torchvision/resnet50"}


def test_paper_recipes(paper: Context) -> None:
    resnet = make("resnet50").recipe(paper, "cifar100")
    assert (resnet.optimizer, resnet.lr, resnet.epochs, resnet.batch_size) == ("sgd", 0.1, 300, 256)
    assert (resnet.milestones, resnet.gamma, resnet.weight_decay) == ((150, 225), 0.1, 5e-4)
    for name in TRANSFORMERS:
        cifar = make(name).recipe(paper, "cifar10")
        assert (cifar.optimizer, cifar.lr, cifar.epochs, cifar.batch_size, cifar.lr_grid) == (
            "adamw", 5e-5, 3, 64, ())
        other = make(name).recipe(paper, "flowers102")
        assert (other.epochs, other.batch_size, other.lr_grid) == (15, 64, (1e-4, 3e-4, 1e-3, 3e-3))


@pytest.mark.parametrize(("name", "mean"), [
    ("vit", (0.5, 0.5, 0.5)),
    ("clip_vit", (0.48145466, 0.4578275, 0.40821073)),
])
def test_normalization(name: str, mean: tuple[float, ...]) -> None:
    assert make(name).normalization()[0] == pytest.approx(mean)


@pytest.mark.parametrize(("name", "tiny_id"), [
    ("resnet50", "tiny/resnet50"), ("vit", "tiny/vit"), ("clip_vit", "tiny/open_clip")])
def test_quick_profile_uses_tiny_models(name: str, tiny_id: str, quick: Context) -> None:
    assert make(name).models_used(quick) == {"backbone": tiny_id}


def test_vit_load_drops_only_the_expected_head_report(
        quick: Context, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import save_file

    from sgid_bench.backbone_modules import load_vit_classifier

    # transformers' loggers do not propagate to the root logger caplog listens on.
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO):
            make("vit").build(3, quick)
    finally:
        hf_logger.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # A checkpoint missing an encoder weight is not the expected case: it is reported.
    broken = tmp_path / "broken"
    shutil.copytree(resolve("tiny/vit", quick), broken)
    weights = load_file(str(broken / "model.safetensors"))
    lost = next(k for k in weights if "layernorm" in k and "bias" in k)
    del weights[lost]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_vit_classifier(broken, 3)
    assert any(lost.split(".")[-2] in r.getMessage() and "missing_keys" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("name", NAMES)
def test_moex_rewrites_the_feature_layer_during_training(name: str, quick: Context) -> None:
    from sgid_bench.plugins import augmenter_class
    from sgid_bench.train import FeatureHook

    backbone = make(name)
    model = backbone.build(4, quick)
    model.train()
    x = batch(backbone, quick)
    targets = torch.eye(4)
    torch.manual_seed(0)
    plain = model(x)
    hook = FeatureHook(backbone, model, [augmenter_class("moex")(p=1.0)])
    hook.targets, hook.gen = targets, torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    mixed = model(x)
    hook.remove()
    assert not torch.allclose(plain, mixed)
    assert not torch.equal(hook.targets, targets)  # labels were interpolated


@pytest.mark.slow
def test_load_open_clip_from_a_bare_checkpoint_file(paper: Context) -> None:
    # A folder with only the weights file: the architecture comes from the model name.
    import open_clip
    from safetensors.torch import save_file

    assert paper.models_dir is not None
    folder = paper.models_dir / "ViT-B-32/laion2b_s34b_b79k"
    folder.mkdir(parents=True)
    reference = open_clip.create_model("ViT-B-32")
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(folder / "weights.safetensors"))
    model, preprocess, tokenizer = load_open_clip("ViT-B-32/laion2b_s34b_b79k", paper)
    assert torch.equal(model.visual.conv1.weight, reference.visual.conv1.weight)
    assert tokenizer(["a photo"]).shape == (1, 77)
