"""Text: the Shakespeare corpus builder and the shipped file, n-gram baselines and the vocabulary score on
hand-made strings, prompts as inpainting observations, and a K = 27 model that trains, samples and is shown."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bfn.data.text import decode_batch, encode, normalize, text_observation
from bfn.errors import DataError
from bfn.evaluation.text import (
    bigram_probs,
    ngram_baselines,
    ngram_nll,
    ngram_samples,
    unigram_probs,
    vocabulary,
    vocabulary_score,
)

ROOT = Path(__file__).resolve().parents[1]


def builder():
    spec = importlib.util.spec_from_file_location("build_shakespeare", ROOT / "scripts" / "build_shakespeare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PLAY = """The Project Gutenberg EBook of Foo, by William Shakespeare
This eBook is for the use of anyone anywhere at no cost.

*** START OF THE PROJECT GUTENBERG EBOOK FOO ***

<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM
SHAKESPEARE IS COPYRIGHT 1990-1993 BY WORLD LIBRARY, INC.>>

THE TRAGEDY OF FOO

by William Shakespeare

PERSONS REPRESENTED.

Foo, King of Bar.
A Prologue.

SCENE: Bar.

ACT I.

SCENE 1. A room.

[Enter FOO.]

Foo.
Who's there? 'Tis 12 o'clock--
  Stand, and UNFOLD yourself!

THE END

*** END OF THE PROJECT GUTENBERG EBOOK FOO ***
This and all associated files are licensed under the Project Gutenberg License.
"""
POEM = """A SONG

by William Shakespeare


Sing, sing; O sing!
"""


def test_builder_strips_headers_and_front_matter_maps_symbols_and_splits_by_work(tmp_path):
    b = builder()
    assert b.clean(PLAY) == "act i scene a room enter foo foo who s there tis o clock stand and unfold yourself"
    assert b.clean(POEM) == "sing sing o sing"
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "foo_gut.txt").write_text(PLAY)
    (folder / "foo_gut_f.txt").write_text(PLAY.replace("UNFOLD", "vnfold"))  # the folio twin: dropped
    (folder / "song_gut.txt").write_text(POEM)
    (folder / "other_gut.txt").write_text(POEM.replace("Sing", "Ring").replace("sing", "ring"))
    works = b.read_works(folder)
    assert sorted(works) == ["foo", "other", "song"]
    arrays = b.build(works, {"valid": ("song",), "test": ("foo",)})
    text = {s: decode_batch(arrays[s][None])[0] for s in b.SPLITS}
    assert text == {"train": "ring ring o ring", "valid": "sing sing o sing", "test": b.clean(PLAY)}
    assert arrays["test_works"].tolist() == ["foo"] and arrays["train_starts"].tolist() == [0]
    assert all(arrays[s].dtype == np.uint8 and arrays[s].max() <= 26 for s in b.SPLITS)
    with pytest.raises(SystemExit, match="nope"):
        b.build(works, {"test": ("nope",)})


def test_the_shipped_corpus_is_split_by_work_and_loads_offline():
    from bfn.data import list_datasets, load_dataset
    from bfn.data.shakespeare import shakespeare_split, shakespeare_works

    asset = ROOT / "src" / "bfn" / "data" / "assets" / "shakespeare27.npz"
    assert asset.stat().st_size <= 2 * 1024 * 1024
    works = {s: [w for w, _ in shakespeare_works(s)] for s in ("train", "valid", "test")}
    assert works["test"] == ["hamlet", "julius_caesar", "tempest", "twelfth_night"]
    assert works["valid"] == ["midsummer_nights_dream", "much_ado_about_nothing", "othello"]
    assert len(works["train"]) == 35 and not set(works["train"]) & (set(works["test"]) | set(works["valid"]))
    test = shakespeare_split("test")
    assert test.max() <= 26 and not np.any((test[1:] == 0) & (test[:-1] == 0))  # no double spaces
    start = dict(shakespeare_works("test"))["hamlet"]
    assert decode_batch(test[None, start:start + 40])[0] == "act i scene i elsinore a platform before"
    entry = {e.spec.name: e for e in list_datasets()}["shakespeare"]
    assert entry.offline() and entry.spec.num_classes == 27 and entry.spec.layout == "sequence"
    data, spec = load_dataset("shakespeare", "valid", seq_len=32)
    assert spec.shape == (32,) and len(data) == len(shakespeare_split("valid")) // 32
    x, label = data[0]
    assert x.shape == (32,) and x.dtype == torch.int64 and int(label) == -1


def test_ngram_models_match_hand_counts():
    ids = encode("ab ab a")  # a b _ a b _ a
    uni = unigram_probs(ids, smoothing=0.0)
    assert uni[encode("a")[0]] == pytest.approx(3 / 7) and uni[0] == pytest.approx(2 / 7)
    bi = bigram_probs(ids, smoothing=0.0)
    a, b_, sp = (int(encode(c)[0]) for c in "ab ")
    assert bi[a, b_] == 1.0 and bi[sp, a] == 1.0 and bi[b_, sp] == 1.0
    window = torch.tensor([[a, b_, sp]])
    assert ngram_nll(window, uni)[0] == pytest.approx(-math.log(3 / 7 * 2 / 7 * 2 / 7))
    assert ngram_nll(window, uni, bi)[0] == pytest.approx(-math.log(3 / 7))  # then two certain transitions
    smoothed = unigram_probs(ids, smoothing=1.0)
    assert smoothed.sum() == pytest.approx(1.0) and smoothed[5] == pytest.approx(1 / (7 + 27))
    cyc = ngram_samples(ids, 50, 12, 2, seed=1)  # a deterministic cycle a -> b -> space -> a
    nxt = {a: b_, b_: sp, sp: a}
    assert all(nxt[int(p)] == int(q) for row in cyc for p, q in zip(row[:-1], row[1:], strict=True))


def test_bigram_beats_unigram_on_held_out_plays():
    from bfn.data.shakespeare import shakespeare_split

    windows = torch.from_numpy(shakespeare_split("test")[: 32 * 2000].astype(np.int64)).reshape(-1, 32)
    res = ngram_baselines(shakespeare_split("train"), windows)
    uni, bi = res["unigram"]["bits_per_char"], res["bigram"]["bits_per_char"]
    assert 3.9 < uni < 4.3 and 3.0 < bi < uni - 0.5  # English letters: about 4.1 and 3.3 bits


def test_vocabulary_score_on_hand_made_strings():
    vocab = vocabulary(["the cat sat", "on a dog"])
    assert vocab == {"the", "cat", "sat", "on", "a", "dog"}
    res = vocabulary_score(["xx the cat sat yy", "zz dog qzx ww"], vocab)  # edge words left out
    assert res["words"] == 5 and res["score"] == pytest.approx(4 / 5)
    # ratio-estimator s.e.: hits (3, 1) of (3, 2) words: sqrt(((3-2.4)^2 + (1-1.6)^2) / (2*1)) / 2.5
    assert res["score_se"] == pytest.approx(math.sqrt(0.72 / 2) / 2.5)
    assert vocabulary_score(["the cat"], vocab, interior=False)["score"] == 1.0
    assert math.isnan(vocabulary_score(["one two"], vocab)["score"])


def test_prompts_become_inpainting_observations():
    assert normalize("To be, or NOT to-be?") == "to be or not to be "
    known, mask = text_observation("To be", 10)
    assert mask.tolist() == [True] * 5 + [False] * 5 and decode_batch(known[None, :5])[0] == "to be"
    known, mask = text_observation({0: "to", 6: "king"}, 10)
    assert mask.nonzero().flatten().tolist() == [0, 1, 6, 7, 8, 9]
    for bad, match in ((("x" * 11), "past the sequence length"), ({0: "abc", 2: "d"}, "overlaps"),
                       ({0: ""}, "empty")):
        with pytest.raises(DataError, match=match):
            text_observation(bad, 10)


def tiny_text_run(run):
    from bfn.config import load_config
    from bfn.training import train

    cfg = load_config("shakespeare-discrete", [
        "model.network.kwargs.dim=16", "model.network.kwargs.depth=1", "model.network.kwargs.heads=2",
        "data.options.seq_len=16", "train.steps=3", "train.batch_size=8",
        "train.sample_every=3", "train.sample_steps=2", "train.sample_n=2",
        "train.checkpoint_every=3", "train.log_every=1", "train.threads=1"])
    train(cfg, run, progress=False)
    return run


def test_a_k27_model_trains_and_samples_with_known_characters(tmp_path):
    from bfn.models import from_pretrained

    run = tiny_text_run(tmp_path / "r")
    model = from_pretrained(run)
    assert model.flow.num_classes == 27
    periodic = (run / "samples" / "step_0000003.txt").read_text().splitlines()  # the trainer's samples as text
    assert len(periodic) == 2 and all(len(t) == 16 for t in periodic)
    known, mask = text_observation({0: "to be", 10: "king"}, 16)
    x = model.sample(3, 5, generator=torch.Generator().manual_seed(0), inpaint=(known, mask))
    assert x.shape == (3, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, mask], known[mask].expand(3, -1))
    assert all(set(t) <= set(" abcdefghijklmnopqrstuvwxyz") for t in decode_batch(x))


@pytest.mark.slow
def test_text_runs_from_the_cli_print_show_and_evaluate_text(tmp_path, capsys):
    from bfn.cli import main

    run = tiny_text_run(tmp_path / "r")
    assert main(["sample", str(run), "--n", "2", "--steps", "4", "--prompt", "to be or"]) == 0
    lines = (run / "samples_paper_4_prompt.txt").read_text().splitlines()
    assert len(lines) == 2 and all(len(t) == 16 and t.startswith("to be or") for t in lines)
    assert lines[0] in capsys.readouterr().out
    assert main(["show", str(run), "--evolution", "--gif", "--steps", "6", "--k", "3", "--n", "2"]) == 0
    assert (run / "figures" / "evolution.png").stat().st_size > 500
    assert (run / "figures" / "sampling.gif").stat().st_size > 500
    assert main(["eval", str(run), "--nll", "--text", "--steps", "5,inf", "--limit", "8", "--n", "4",
                 "--text-steps", "2,3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bits/char" in out and "unigram model" in out and "held-out text" in out
    from benchmarks.text import main as text_benchmark

    assert text_benchmark([str(run), "--n", "4", "--nfe", "3", "--samplers", "paper,sde2", "--nll-steps", "inf",
                           "--nll-limit", "8", "--out", str(tmp_path / "b")]) == 0
    entry = json.loads((tmp_path / "b" / "text.json").read_text())["shakespeare-discrete"]
    assert entry["model_step"] == 3 and set(entry["vocab"]) == {"paper", "sde2"}
    score = entry["vocab"]["sde2"]["3"]["score"]  # NaN when 4 samples of 16 characters hold no interior word
    assert entry["vocab"]["paper"]["3"]["steps"] == 2 and (math.isnan(score) or 0 <= score <= 1)
    assert "held-out text" in entry["reference"] and entry["nll"]["ngram"]["bigram"]["bits_per_char"] > 0


def test_the_bound_of_the_best_context_free_network_is_the_unigram_cross_entropy():
    """For a network that sees only a character's own input, the Bayes-optimal output is softmax(y + ln pi); the
    continuous-time bound L^inf + L^r is then tight: it equals the unigram model's bits/char (the line a text run
    sits on before it learns anything about neighbouring characters)."""
    from benchmarks.text import context_free_bound

    from bfn.data.shakespeare import shakespeare_split

    train, test = shakespeare_split("train"), shakespeare_split("test")
    bound = context_free_bound(train, test, 0.5625, n=100_000)
    windows = torch.from_numpy(test[: 32 * 4000].astype(np.int64)).reshape(-1, 32)
    unigram = ngram_baselines(train, windows)["unigram"]["bits_per_char"]
    assert bound == pytest.approx(unigram, abs=0.03)
