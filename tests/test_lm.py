"""Language modelling: text reading and tokenisation, TBPTT batching and state carrying, training below the
unigram entropy, evaluation, generation (reproducible, streamed == non-streamed == full re-run), the CLI, and
every bad-input case of the issue. Tiny texts and models: the whole file runs in well under two minutes."""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from grukit.data.text import EOS, UNK, StreamBatches, Vocab, find_splits, read_text, streams, tokenize
from grukit.errors import ConfigError, DataError
from grukit.tasks import language as lm
from grukit.tasks.language_config import LMConfig
from tests.conftest import TINY, TOL

# A small, very regular text: a GRU learns it far below its unigram entropy in a few epochs.
LINES = ["the cat sat on the mat .", "the dog sat on the log .", "a cat and a dog ran to the mat .",
         "the bird sat on a tree .", "a dog saw the cat on the log ."]
TEXT = "\n".join(LINES[i % len(LINES)] for i in range(120)) + "\n"
SMALL = TINY["lm"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("lm") / "text.txt"
    p.write_text(TEXT + "ünïcödé café, naïve.\n", encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """One trained run per tokenisation (trained once for the module)."""
    from grukit.train import fit
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind in ("char", "word", "byte"):
            extra = {"bptt": 8} if kind == "word" else {}
            out[kind] = fit("lm", data=str(corpus), out=tmp_path_factory.mktemp("runs") / kind, tokenize=kind,
                            **{**SMALL, **extra})
    return out


def _cfg(**kw) -> LMConfig:
    return LMConfig(**{**SMALL, **kw})


# ------------------------------------------------------------------ tokenisation and vocabulary
def test_tokenisations_and_vocabulary():
    assert tokenize("ab\nc", "char") == ["a", "b", "\n", "c"]
    assert tokenize(" a b\n c\n", "word") == ["a", "b", EOS, "c", EOS]          # <eos> per line
    assert tokenize("é", "byte") == [0xC3, 0xA9]
    words = tokenize("a a a b b c <unk>\n", "word")
    v = Vocab.build(words, "word", min_freq=2)
    assert v.itos[:2] == [UNK, EOS] and set(v.itos) == {UNK, EOS, "a", "b"}
    assert v.encode(["c", "<unk>", "zzz"]).tolist() == [0, 0, 0]                  # rare, literal and unseen
    assert Vocab.build(words, "word", max_size=3).itos == [UNK, EOS, "a"]          # specials + most frequent
    c = Vocab.build(list("hello"), "char")
    assert c.decode(c.encode(list("hole"))) == "hole" and c.decode(c.encode(["z"])) == "\ufffd"
    b = Vocab.build([], "byte")
    ids = b.encode("naïve ☃".encode())
    assert len(b) == 256 and b.decode(ids) == "naïve ☃"
    dec = b.decoder()                                                              # split UTF-8 is joined
    assert dec([0xE2]) + dec([0x98]) + dec([0x83], True) == "☃"
    assert Vocab.from_dict(v.to_dict()).itos == v.itos


def test_ptb_layout_and_separate_files(tmp_path):
    for split, body in [("train", " the cat <unk> sat\n a dog\n"), ("valid", " the dog\n"), ("test", " a cat\n")]:
        (tmp_path / f"ptb.{split}.txt").write_text(body)
    (tmp_path / "LICENSE.txt").write_text("not data")
    found = find_splits(tmp_path)
    assert {k: v.name for k, v in found.items()} == {"train": "ptb.train.txt", "valid": "ptb.valid.txt",
                                                     "test": "ptb.test.txt"}
    vocab, ids, sources = lm.split_ids(_cfg(data=str(tmp_path), tokenize="word"))
    assert [vocab.itos[i] for i in ids["train"]] == ["the", "cat", UNK, "sat", EOS, "a", "dog", EOS]
    assert [vocab.itos[i] for i in ids["test"]] == ["a", "cat", EOS] and sources["test"].endswith("ptb.test.txt")
    # a folder without that layout is read as one text; the tail gives valid / test
    (tmp_path / "ptb.valid.txt").unlink()
    assert find_splits(tmp_path) is None


def test_single_file_split_matches_nanogpt_convention(corpus):
    _, ids, _ = lm.split_ids(_cfg(data=str(corpus), tokenize="char", val_fraction=0.1, test_fraction=0.0))
    n = len(read_text(corpus))
    assert len(ids["train"]) == int(n * 0.9) and len(ids["valid"]) == n - int(n * 0.9) and "test" not in ids


# ------------------------------------------------------------------ batching and carried state
def test_stream_windows_cover_the_streams():
    ids = np.arange(103)
    data = streams(ids, 4)                                                         # (4, 25), tail of 3 dropped
    assert data.shape == (4, 25) and data[1, 0] == 25
    batches = StreamBatches(data, 7)
    xs = torch.cat([b["x"] for b in batches], 1)
    ys = torch.cat([b["y"] for b in batches], 1)
    assert len(batches) == 4 and [b["x"].shape[1] for b in batches] == [7, 7, 7, 3]
    assert torch.equal(xs, torch.from_numpy(data[:, :-1])) and torch.equal(ys, torch.from_numpy(data[:, 1:]))
    assert batches.tokens == 4 * 24


@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "layer_norm": True, "reset_after": False}])
def test_carried_state_equals_one_long_forward(options):
    torch.manual_seed(0)
    cfg = _cfg(data="x", hidden_size=12, num_layers=options.get("num_layers", 1), **{
        k: v for k, v in options.items() if k != "num_layers"})
    model = lm.LMTask(cfg, {"vocab_size": 11, "tokenize": "char", "input_size": 16}).eval()
    data = torch.randint(0, 11, (3, 41)).numpy()
    batches = StreamBatches(data, 8)
    seen = []
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                            # self.log without a Trainer
        model.on_validation_epoch_start()
        for i, b in enumerate(batches):
            model.validation_step(b, i)
    windows = torch.cat(seen, 1)                                                   # (3, 40, V)
    with torch.no_grad():
        full, h_n = model({"x": torch.from_numpy(data[:, :-1])})                  # (3, 40, V), (L, 3, H)
    torch.testing.assert_close(windows, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model._states["val"], h_n, rtol=1e-5, atol=1e-5)
    assert not model._states["val"].requires_grad
    model.on_validation_epoch_start()                                              # reset at epoch start
    assert "val" not in model._states
    total, n = lm.stream_nll(model, batches)                                       # evaluation path too
    ref = torch.nn.functional.cross_entropy(full.reshape(-1, 11), torch.from_numpy(data[:, 1:]).reshape(-1),
                                            reduction="sum")
    assert n == 120 and math.isclose(total, float(ref), rel_tol=1e-5)


def test_training_carries_detached_state():
    cfg = _cfg(data="x", hidden_size=8)
    model = lm.LMTask(cfg, {"vocab_size": 7, "tokenize": "char", "input_size": 16}).train()
    batches = StreamBatches(torch.randint(0, 7, (2, 20)).numpy(), 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.on_train_epoch_start()
        loss = model.training_step(batches[0], 0)
        loss.backward()                                                            # graph ends at the window
        first = model._states["train"]
        model.training_step(batches[1], 1).backward()
    assert not first.requires_grad and model._states["train"] is not first
    model.on_train_epoch_start()
    assert "train" not in model._states


# ------------------------------------------------------------------ training, evaluation, generation
def test_training_falls_below_unigram_entropy(runs):
    for kind, run in runs.items():
        m = run.evaluate()
        assert m["grukit"]["valid_loss"] < 0.8 * m["unigram"]["valid_loss"], (kind, m)
        key = "valid_ppl" if kind == "word" else "valid_bpc"
        assert key in m["grukit"]
        assert math.isclose(m["grukit"][key], math.exp(m["grukit"]["valid_loss"]) if kind == "word"
                            else m["grukit"]["valid_loss"] / math.log(2), rel_tol=1e-9)
        assert run.meta["vocab"]["kind"] == kind and (run.path / "meta.json").is_file()
        assert "test_loss" in m["grukit"]


def test_generation_is_reproducible_and_streams(runs):
    for kind, run in runs.items():
        a = lm.generate_text(run, prompt="the cat", length=40, temperature=0.9, top_k=5, seed=3)
        b = lm.generate_text(run, prompt="the cat", length=40, temperature=0.9, top_k=5, seed=3)
        assert a == b and a.startswith("the cat")
        pieces = []
        c = lm.generate_text(run, prompt="the cat", length=40, temperature=0.9, top_k=5, seed=3,
                             on_text=pieces.append)
        assert len(pieces) > 5 and "".join(pieces) == c == a                    # streamed == returned
        buf = io.StringIO()
        lm.generate_run(run, run.models(), prompt="the cat", length=40, temperature=0.9, top_k=5, seed=3,
                    stream=buf)
        assert buf.getvalue() == a + "\n"
        assert lm.generate_text(run, length=40, top_p=0.5, seed=4) != lm.generate_text(run, length=40,
                                                                                       top_p=0.5, seed=5) \
            or kind == "word"


def _rerun_reference(model, vocab, prompt, length, temperature, top_k, top_p, seed):
    """Non-streamed generation: the whole sequence re-run through forward() for every new token."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    ids = lm._prompt_ids(prompt, vocab)
    out = []
    with torch.no_grad():
        for _ in range(length):
            logits, _ = model({"x": torch.tensor([ids + out])})
            out.append(_one_row_multinomial(logits[0, -1], temperature, top_k, top_p, gen))
    return vocab.decode(out)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (1.0, 0, 0.9), (0.7, 3, 1.0)])
def test_step_generation_equals_full_rerun(runs, temperature, top_k, top_p):
    run = runs["char"]
    model, vocab = run.models()[0], Vocab.from_dict(run.meta["vocab"])
    fast = lm.sample(model, vocab, "the ", 30, temperature, top_k, top_p, seed=11)
    assert fast == _rerun_reference(model, vocab, "the ", 30, temperature, top_k, top_p, 11)


def test_batched_generation_equals_one_prompt_at_a_time(runs):
    """generate() advances all prompts with one batched GRU.step; each prompt's text (greedy, so the draws do
    not depend on the other prompts) equals generating it alone, prompts of different lengths included."""
    for kind in ("char", "byte"):
        run = runs[kind]
        prompts = ["the ", "a dog saw", ""]
        steps = list(lm.generate(run.models(), run.meta, prompts, 12, temperature=0.0, seed=0))
        assert len(steps) == 12 and all(len(s) == 3 for s in steps)
        together = ["".join(s[i] for s in steps) for i in range(3)]
        vocab = Vocab.from_dict(run.meta["vocab"])
        alone = [lm.sample(run.models(), vocab, p, 12, temperature=0.0, seed=0) for p in prompts]
        assert together == alone
    with pytest.raises(ConfigError, match="temperature=-1"):
        lm.generate(run.models(), run.meta, ["x"], 3, temperature=-1)             # checked before any step
    # sampled: each prompt draws from its own seed, so its text does not depend on its batch companions
    steps = list(lm.generate(run.models(), run.meta, ["the ", "a dog"], 15, temperature=[1.0, 0.7],
                             seed=[11, 5]))
    other = list(lm.generate(run.models(), run.meta, ["xyz", "a dog", "the "], 15, temperature=[1.0, 0.7, 1.0],
                             seed=[3, 5, 11]))
    assert [s[1] for s in steps] == [s[1] for s in other] and [s[0] for s in steps] == [s[2] for s in other]
    assert "".join(s[0] for s in steps) == lm.sample(run.models(), vocab, "the ", 15, 1.0, seed=11)


def _one_row_multinomial(logits, temperature, top_k, top_p, gen):
    """The per-row reference: scale, cut and softmax one (V,) row, then ``torch.multinomial``."""
    if temperature == 0:
        return int(logits.argmax())
    z = logits.double() / temperature
    if 0 < top_k < z.numel():
        z = z.masked_fill(z < torch.topk(z, top_k).values[-1], float("-inf"))
    probs = torch.softmax(z, -1)
    if top_p < 1:
        p_sorted, idx = torch.sort(probs, descending=True)
        p_sorted = p_sorted.masked_fill(torch.cumsum(p_sorted, 0) - p_sorted >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(0, idx, p_sorted)
    return int(torch.multinomial(probs, 1, generator=gen))


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (2, 1.0), (0, 0.6), (10, 0.95)])
def test_batched_choice_equals_per_row_multinomial(top_k, top_p):
    """_choose_rows scales, cuts and softmaxes all rows at once; each row's token (mixed temperatures, greedy
    rows included) equals one-row ``torch.multinomial`` with that row's own generator, draw for draw."""
    torch.manual_seed(0)
    temps = [0.0, 0.5, 1.0, 1.7, 0.0, 0.9]
    for trial in range(20):
        V = (3, 40, 257)[trial % 3]
        x = torch.randn(len(temps), V) * 3
        got = lm._choose_rows(x, temps, top_k, top_p,
                              [torch.Generator().manual_seed(100 * trial + b) for b in range(len(temps))])
        want = [_one_row_multinomial(x[b], t, top_k, top_p, torch.Generator().manual_seed(100 * trial + b))
                for b, t in enumerate(temps)]
        assert got.tolist() == want
    assert lm._choose_rows(torch.tensor([[0.0, 5.0, 1.0]]), [0.0], 0, 1.0, [torch.Generator()]).tolist() == [1]


def test_score_is_the_mean_nll_of_each_text(runs):
    """score(): the mean next-token NLL of every text from a zero state, primed by the boundary token, equal
    to a hand computation through forward(); a batch of texts of different lengths equals one at a time."""
    run = runs["char"]
    model, vocab = run.models()[0], Vocab.from_dict(run.meta["vocab"])
    texts = ["the cat sat", "a dog", "the zebra ran far away ."]
    got = lm.score([model], run.meta, texts)
    for text, value in zip(texts, got):
        ids = lm._prompt_ids("", vocab) + lm._text_ids(text, vocab)
        with torch.no_grad():
            logits, _ = model.eval()({"x": torch.tensor([ids[:-1]])})
        ref = torch.nn.functional.cross_entropy(logits[0], torch.tensor(ids[1:]))
        assert math.isclose(value, float(ref), rel_tol=TOL["float32"]["rtol"])
        assert lm.score([model], run.meta, [text]) == pytest.approx([value], rel=TOL["float32"]["rtol"])
    assert got[0] < lm.score([model], run.meta, ["xq zj vvk"])[0]               # familiar text scores lower
    with pytest.raises(DataError, match="text 1 is empty"):
        lm.score([model], run.meta, ["ok", ""])


def test_sampling_filters():
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 5.0, 4.9, -2.0])
    assert lm._choose(logits, 0.0, 0, 1.0, gen) == 1                               # greedy
    assert {lm._choose(logits, 1.0, 2, 1.0, gen) for _ in range(50)} == {1, 2}    # top-k
    assert {lm._choose(logits, 1.0, 0, 0.3, gen) for _ in range(50)} == {1}       # nucleus keeps the top one


def test_evaluate_and_predict_on_other_text(runs, tmp_path):
    run = runs["word"]
    other = tmp_path / "other.txt"
    other.write_text("the cat sat on the log .\nthe dog sat on the mat .\n")
    m = run.evaluate(str(other))
    assert set(m["grukit"]) == {"loss", "ppl"} and m["grukit"]["ppl"] < m["unigram"]["ppl"]
    other.write_text("the cat sat on the log .\nthe zebra sat .\n")
    (path,) = run.predict(str(other), tmp_path / "p.csv")
    import pandas as pd
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["position", "token", "nll", "bits"] and len(frame) == 12
    assert (frame["token"] == UNK).sum() == 1                                      # zebra


def test_cli_train_evaluate_generate(corpus, tmp_path, capsys):
    from grukit.cli import main
    out = tmp_path / "cli_run"
    args = ["train", "lm", "--data", str(corpus), "--tokenize", "byte", "--out", str(out), "--no-progress"]
    for k, v in {**SMALL, "max_epochs": 1}.items():
        if k != "progress":
            args += [f"--{k.replace('_', '-')}", str(v)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    assert "valid_bpc" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "the", "--length", "25", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    assert printed == lm.generate_text(str(out), prompt="the", length=25, seed=7) + "\n"
    assert main(["generate", str(out), "--length", "5", "--seed", "1", "--out", str(tmp_path / "g.txt")]) == 0
    assert (tmp_path / "g.txt").read_text() == lm.generate_text(str(out), length=5, seed=1)
    assert main(["generate", str(out), "--top-p", "1.5"]) == 2
    assert "top_p=1.5" in capsys.readouterr().err


# ------------------------------------------------------------------ bad input
def test_invalid_utf8_names_file_and_offset(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello\nwor\xffld " * 3)
    with pytest.raises(DataError, match=r"bad\.txt, line 2: invalid utf-8 at byte offset 9") as e:
        lm.prepare(_cfg(data=str(p), bptt=2, batch_size=1))
    assert "--errors replace" in str(e.value)
    _, ids, _ = lm.split_ids(_cfg(data=str(p), errors="replace"))                 # decoded on request
    vocab, ids, _ = lm.split_ids(_cfg(data=str(p), encoding="latin-1", val_fraction=0, test_fraction=0))
    assert "ÿ" in vocab.itos
    vocab, ids, _ = lm.split_ids(_cfg(data=str(p), tokenize="byte", val_fraction=0, test_fraction=0))
    assert 0xFF in ids["train"].tolist()                                           # bytes never fail
    with pytest.raises(DataError, match="unknown encoding 'nope'"):
        lm.split_ids(_cfg(data=str(p), encoding="nope"))


def test_empty_short_and_missing_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.txt: empty"):
        lm.prepare(_cfg(data=str(empty)))
    short = tmp_path / "short.txt"
    short.write_text("tiny text")
    with pytest.raises(DataError, match=r"shorter than one window of bptt \+ 1 = 17; use a longer text or a "
                                        r"smaller --bptt"):
        lm.prepare(_cfg(data=str(short), val_fraction=0, test_fraction=0))
    mid = tmp_path / "mid.txt"
    mid.write_text("x" * 40)
    with pytest.raises(DataError, match=r"batch_size=4 streams leave 10 tokens per stream.*lower --batch-size"):
        lm.prepare(_cfg(data=str(mid), val_fraction=0, test_fraction=0))
    with pytest.raises(DataError, match="not found"):
        lm.prepare(_cfg(data=str(tmp_path / "missing.txt")))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        lm.prepare(_cfg(data=str(tmp_path / "folder")))
    ok = tmp_path / "ok.txt"
    ok.write_text("abcdefgh" * 40)
    with pytest.raises(DataError, match=r"short_valid\.txt: holds 1 token"):
        (tmp_path / "short_valid.txt").write_text("a")
        lm.prepare(_cfg(data=str(ok), valid_data=str(tmp_path / "short_valid.txt")))


def test_folder_of_files_is_one_text(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / ".hidden").write_text("skip")
    assert read_text(tmp_path) == "first\nsecond"                                 # newline between files


def test_bad_options():
    with pytest.raises(ConfigError, match="tokenize='chars'.*did you mean 'char'"):
        LMConfig.from_dict({"data": "x", "tokenize": "chars"})
    with pytest.raises(ConfigError, match="bidirectional"):
        LMConfig.from_dict({"data": "x", "bidirectional": True})
    with pytest.raises(ConfigError, match=r"(?s)2 problems.*temperature=-1.*top_k=-2"):
        lm.check_sampling(10, -1.0, -2, 1.0)
    with pytest.raises(ConfigError, match="no generation option"):
        lm.generate_run(None, [], primer="x")


def test_adaptive_softmax_model(tmp_path):
    """softmax=adaptive: training path, exact NLL in evaluation and a distribution for sampling."""
    cfg = _cfg(data="x", softmax="adaptive", tie_weights=False, cutoffs=(4, 10))
    model = lm.LMTask(cfg, {"vocab_size": 20, "tokenize": "word", "input_size": 16}).eval()
    batches = StreamBatches(torch.randint(0, 20, (2, 30)).numpy(), 8)
    total, n = lm.stream_nll(model, batches)
    with torch.no_grad():
        seq, _ = model.encode({"x": batches.data[:, :-1]})
        logp = model.logits(seq)                                                   # (2, 29, 20) log-probs
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 29))
    ref = -logp.gather(-1, batches.data[:, 1:, None]).sum()
    assert n == 58 and math.isclose(total, float(ref), rel_tol=1e-4)
    vocab = Vocab("word", [UNK, EOS] + [f"w{i}" for i in range(18)])
    assert lm.sample(model, vocab, "w1 w2", 5, seed=0) == lm.sample(model, vocab, "w1 w2", 5, seed=0)
    with pytest.raises(ConfigError, match="no-tie-weights"):
        LMConfig.from_dict({"data": "x", "softmax": "adaptive"})


def test_weight_drop_masks_recurrent_weights_in_training_only():
    """weight_drop: DropConnect on W_hh in training (same result as a GRU given the masked weights, gradient
    zero where the mask dropped), untouched parameters, and the plain model in evaluation."""
    cfg = _cfg(data="x", hidden_size=8, num_layers=2, weight_drop=0.5)
    model = lm.LMTask(cfg, {"vocab_size": 7, "tokenize": "char", "input_size": 16})
    x = {"x": torch.randint(0, 7, (3, 5))}
    gru = model.encoder
    before = gru.weight_hh_l1.detach().clone()
    model.train()
    torch.manual_seed(3)
    seq, _ = model.encode(x)
    torch.manual_seed(3)
    emb = model.drop(model.embedding(x["x"]))
    masked = {n: torch.nn.functional.dropout(getattr(gru, n), 0.5) for n in gru._flat_weights_names
              if n.startswith("weight_hh")}
    ref, _ = torch.func.functional_call(gru, masked, (emb, None))
    torch.testing.assert_close(seq, ref)
    seq.sum().backward()
    dropped = masked["weight_hh_l1"] == 0
    assert dropped.any() and (gru.weight_hh_l1.grad[dropped] == 0).all()
    assert (gru.weight_hh_l1.grad[~dropped] != 0).any() and torch.equal(gru.weight_hh_l1, before)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x)[0], gru(model.embedding(x["x"]))[0])
    with pytest.raises(ConfigError, match="weight_drop=1.0"):
        LMConfig.from_dict({"data": "x", "weight_drop": 1.0})
