"""The world's seq2seq text model trainer (:mod:`sgid_bench.world.train_text`) at a tiny
scale: the saved T5 and tokenizer load with ``from_pretrained`` and generate clean text by
sampling and beam search, the loss falls, the summary target follows its rule, and the
build is deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sgid_bench.world import scene, train_text


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float], list[str]]:
    out = tmp_path_factory.mktemp("world") / "text"
    out.mkdir()
    lines: list[str] = []
    metrics = train_text.build(out, world=out.parent, scale=0.004, log=lines.append)
    return out, metrics, lines


def test_build_trains_and_reports_metrics(built: tuple[Path, dict[str, float], list[str]]
                                          ) -> None:
    _, metrics, lines = built
    losses = [float(x.split(" loss ")[1].split()[0]) for x in lines if " loss " in x]
    assert len(losses) >= 2
    assert losses[-1] < losses[0]
    for key in ("describe_wellformed_class_pct", "summary_background_accuracy"):
        assert 0.0 <= metrics[key] <= 100.0
    assert 1.0 <= metrics["describe_distinct_per_10"] <= 10.0


def test_saved_model_generates_through_transformers(
        built: tuple[Path, dict[str, float], list[str]]) -> None:
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    out = built[0]
    model = T5ForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    caps = [scene.caption(s) for s in scene.corpus_scenes(3)]
    prompts = [train_text.DESCRIBE.format(label="star"),
               train_text.SUMMARIZE.format(captions=train_text.SEPARATOR.join(caps))]
    enc = tok(prompts, padding=True, return_tensors="pt")
    assert set(enc) == {"input_ids", "attention_mask"}
    assert not bool((enc["input_ids"] == tok.unk_token_id).any())
    words = set(train_text.vocabulary())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sampled = model.generate(**enc, do_sample=True, top_p=0.9, top_k=0,
                                 num_return_sequences=4, max_length=16)
    beams = model.generate(**enc, num_beams=3, num_return_sequences=2, max_length=16)
    for out_ids, n in ((sampled, 8), (beams, 4)):
        texts = tok.batch_decode(out_ids, skip_special_tokens=True)
        assert len(texts) == n
        assert all(set(t.split()) <= words for t in texts)


def test_summary_target_rule() -> None:
    caps = ["a small red star on the grass", "a large blue star in the sky",
            "a small blue star on the grass", "a large red heart in the sky"]
    # shape: star (3 of 4); colour: red/blue tie -> red (first); background: grass/sky
    # tie -> grass (first).
    assert train_text.summary_target(caps) == "a red star on the grass"
    assert train_text.summary_target(["nonsense", caps[1]]) == "a blue star in the sky"
    assert train_text.summary_target(["nonsense"]) is None
    prompt, target = train_text.summarize_example(np.random.default_rng(0))
    assert prompt.startswith("summarize: ")
    assert train_text.parse(target) is not None


def test_build_is_deterministic(tmp_path: Path) -> None:
    blobs = []
    for name in ("a", "b"):
        out = tmp_path / name / "text"
        out.mkdir(parents=True)
        train_text.build(out, world=out.parent, scale=0.001, log=lambda _: None)
        blobs.append((out / "model.safetensors").read_bytes())
    assert blobs[0] == blobs[1]
