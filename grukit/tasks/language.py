r"""Language modelling and text generation: embedding -> stacked GRU -> dropout -> (tied) decoder.

Training reads the text as B contiguous streams in windows of ``bptt`` tokens (truncated BPTT, Zaremba et al.
2014): ``carry_state = True`` makes :class:`~grukit.tasks.base.SequenceTask` feed each window the detached final
state of the previous one and restart from zeros at each epoch. The loss is the mean next-token cross-entropy
(nats); validation and test report perplexity :math:`e^{\text{loss}}` for words and bits per character
:math:`\text{loss} / \ln 2` for chars and bytes.

The inference entry points, for the CLI, the server and Python alike: :func:`score` (mean NLL per text,
through :func:`~grukit.tasks.base.infer`) and :func:`generate`, which primes the GRU with all prompts in one
batched forward pass, then advances every prompt by one token per batched :meth:`grukit.nn.GRU.step` from the
carried state, so each new token costs one step, never a re-run of the prompt. Python API::

    from grukit.runs import open_run
    from grukit.tasks import language
    run = open_run("runs/lm")
    language.score(run.models(), run.meta, ["to be or not to be"])            # [nats per token]
    for pieces in language.generate(run.models(), run.meta, ["ROMEO:", "JULIET:"], 300, 0.8, seed=1):
        ...                                                                    # one text piece per prompt
    text = language.generate_text(run, prompt="ROMEO:", length=300, temperature=0.8, seed=1)
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.batching import Prepared, RankStreams
from ..data.text import EOS, StreamBatches, Vocab, encode_file, split_ids, streams, tokenize
from ..errors import ConfigError, DataError
from ..nn import frozen_weights
from .base import SequenceTask, infer, write_predictions
from .heads import AdaptiveHead, RegressionHead, TiedLMHead
from .language_config import LMConfig

__all__ = ["LMTask", "Task", "prepare", "evaluate", "predict", "score", "generate", "generate_run",
           "generate_text", "sample", "check_sampling", "stream_nll", "split_ids"]

LN2 = math.log(2.0)


# ====================================================================== data
def _eval_streams(ids: np.ndarray, cfg: LMConfig, name: str) -> StreamBatches:
    if len(ids) < 2:
        raise DataError(f"holds {len(ids)} token(s); a language model needs at least 2 (a token and its "
                        "successor) to be evaluated", path=name)
    B = max(1, min(cfg.eval_batch_size, len(ids) // (cfg.bptt + 1)))
    return StreamBatches(streams(ids, B), cfg.bptt)


def _loader(batches: StreamBatches, even: bool = True) -> DataLoader:
    return DataLoader(RankStreams(batches, even), batch_size=None)    # ready-made (B, T) batches, in order


def prepare(cfg: LMConfig) -> Prepared:
    vocab, ids, sources = split_ids(cfg)
    train = ids["train"]
    T, B = cfg.bptt, cfg.batch_size
    if len(train) == 0:
        raise DataError("no training text (empty after the validation/test split)", path=sources["train"])
    if len(train) < T + 1:
        raise DataError(f"the training text has {len(train)} {cfg.tokenize} tokens, shorter than one window of "
                        f"bptt + 1 = {T + 1}; use a longer text or a smaller --bptt", path=sources["train"])
    if len(train) // B < T + 1:
        raise DataError(f"{len(train)} training tokens cut into batch_size={B} streams leave "
                        f"{len(train) // B} tokens per stream, shorter than one window of bptt + 1 = {T + 1}; "
                        "lower --batch-size or --bptt", path=sources["train"])
    val = _eval_streams(ids["valid"], cfg, sources["valid"]) if "valid" in ids else None
    V = len(vocab)
    meta = {"vocab": vocab.to_dict(), "vocab_size": V, "tokenize": cfg.tokenize, "input_size": cfg.embedding_size,
            "has_val": val is not None, "sources": sources, "data_name": cfg.data,
            "tokens": {k: int(len(v)) for k, v in ids.items()},
            "unigram_counts": np.bincount(train, minlength=V).tolist()}
    return Prepared(_loader(StreamBatches(streams(train, B), T)), _loader(val, even=False) if val is not None else None,
                    meta)


# ====================================================================== model
class TokenNLL:
    """torchmetrics Metric (built lazily): mean next-token NLL as perplexity (words) or bits per token."""

    @staticmethod
    def make(kind: str):
        from torchmetrics import Metric

        class _NLL(Metric):
            full_state_update = False

            def __init__(self):
                super().__init__()
                self.add_state("nll", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
                self.add_state("n", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

            def update(self, preds: Tensor, target: Tensor) -> None:
                if preds.shape == target.shape:                         # per-token NLL already
                    self.nll += preds.double().sum()
                else:                                                   # logits (..., V)
                    V = preds.shape[-1]
                    self.nll += F.cross_entropy(preds.reshape(-1, V).float(), target.reshape(-1),
                                                reduction="sum").double()
                self.n += target.numel()

            def compute(self) -> Tensor:
                mean = self.nll / self.n.clamp_min(1)
                return torch.exp(mean) if kind == "word" else mean / LN2

        return _NLL()


class LMTask(SequenceTask):
    """Embedding -> grukit.nn.GRU (any engine option) -> dropout -> decoder (tied to the embedding if asked)."""

    task_name = "lm"
    carry_state = True

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def build_encoder(self) -> nn.Module:
        c = self.config
        self.embedding = nn.Embedding(self.vocab_size, c.embedding_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)              # small logits at start when tied
        self.drop = nn.Dropout(c.dropout)
        return super().build_encoder(c.embedding_size)                  # (B, T, E) -> (B, T, H)

    def build_head(self) -> nn.Module:
        c = self.config
        if c.softmax == "adaptive":
            return AdaptiveHead(c.hidden_size, self.vocab_size, c.cutoffs, c.dropout)
        if c.tie_weights:
            return TiedLMHead(self.embedding, c.hidden_size, c.dropout)
        return RegressionHead(c.hidden_size, self.vocab_size, c.dropout)

    def build_metrics(self):
        from torchmetrics import MetricCollection
        name = "ppl" if self.meta.get("tokenize") == "word" else "bpc"
        return MetricCollection({name: TokenNLL.make(self.meta.get("tokenize", "char"))})

    def encode(self, inputs, state=None):
        x = self.drop(self.embedding(inputs["x"]))                      # (B, T) -> (B, T, E)
        p = self.config.weight_drop
        if p > 0 and self.training:                                     # DropConnect on W_hh, one mask per batch
            dropped = {n: F.dropout(getattr(self.encoder, n), p) for n in self.encoder._flat_weights_names
                       if n.startswith("weight_hh")}
            return torch.func.functional_call(self.encoder, dropped, (x, state))
        return self.encoder(x, state)                                   # (B, T, H), (L, B, H)

    @property
    def adaptive(self) -> bool:
        return isinstance(self.head, AdaptiveHead)

    def readout(self, seq, h_n, inputs):
        return self.head.drop(seq) if self.adaptive else self.head(seq)  # features (B, T, H) or logits (B, T, V)

    def logits(self, seq: Tensor) -> Tensor:
        """(..., V) next-token scores (logits, or log-probabilities for the adaptive softmax) of GRU outputs."""
        return self.head.log_prob(seq) if self.adaptive else self.head(seq)

    def loss(self, outputs, y, inputs) -> Tensor:
        if self.adaptive:
            return self.head.loss(outputs, y)
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1))   # (B*T, V), (B*T,)

    def metric_inputs(self, outputs, y, inputs):
        if self.adaptive:                                               # target log-probs only: cheap
            return -self.head.asm(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1)).output, y.reshape(-1)
        return outputs, y

    def decode(self, outputs, inputs=None):
        """With targets ``inputs["y"]`` (B, T): their NLL in nats (B, T), what evaluation sums; without: the
        next-token log-probabilities (B, T, V)."""
        y = inputs.get("y") if isinstance(inputs, dict) else None
        if y is not None:
            if self.adaptive:
                return -self.head.asm(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1)).output.view(y.shape)
            return F.cross_entropy(outputs.transpose(1, 2), y, reduction="none")   # (B, V, T) vs (B, T)
        return self.head.log_prob(outputs) if self.adaptive else torch.log_softmax(outputs, -1)   # (B, T, V)

    # ---- training extras: throughput
    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._tokens, self._t0 = 0, time.perf_counter()

    def training_step(self, batch, batch_idx):
        self._tokens = getattr(self, "_tokens", 0) + int(batch["y"].numel())
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        dt = time.perf_counter() - getattr(self, "_t0", time.perf_counter())
        if dt > 0:
            self.log("train_tokens_per_s", getattr(self, "_tokens", 0) / dt, on_epoch=True, on_step=False)


Task = LMTask


# ====================================================================== evaluation (through tasks.base.infer)
def _models(models) -> list[LMTask]:
    return [models] if isinstance(models, SequenceTask) else list(models)


def stream_nll(models, batches: StreamBatches, per_token: bool = False):
    """Summed NLL (nats) and token count over ``batches``, the state carried across windows.

    Runs through :func:`grukit.tasks.base.infer` (the task's ``carry_state`` carries the state from window to
    window; an ensemble's per-token NLLs are averaged). With ``per_token`` also returns the (B, L-1) NLL of
    every predicted token.
    """
    rows = infer(_models(models), batches)                              # one (B, T) NLL per window
    total = float(sum(float(r.sum(dtype=torch.float64)) for r in rows))
    n = int(sum(r.numel() for r in rows))
    if per_token:
        return total, n, torch.cat(rows, 1) if rows else torch.zeros(0, 0)
    return total, n


def score(models, meta: dict, texts: list[str]) -> list[float]:
    """Mean next-token NLL (nats per token) of each text, each read on its own from a zero state.

    A text is primed with the boundary token generation starts from (newline for char/byte, ``<eos>`` for
    words) so its first token is scored too. Texts are scored together in padded batches of 64 through
    :func:`grukit.tasks.base.infer` (an ensemble averages the members' per-token NLLs).
    """
    vocab = Vocab.from_dict(meta["vocab"])
    ids = []
    for i, t in enumerate(texts):
        row = _prompt_ids("", vocab) + _text_ids(t, vocab)
        if len(row) < 2:
            raise DataError(f"text {i} is empty; expected at least one token to score")
        ids.append(row)
    out: list[float] = []
    for s in range(0, len(ids), 64):
        chunk = ids[s:s + 64]
        n = torch.tensor([len(r) - 1 for r in chunk])                   # (B,) scored tokens per text
        x = torch.zeros(len(chunk), int(n.max()), dtype=torch.int64)    # (B, T) padded after the end
        y = torch.zeros_like(x)
        for b, r in enumerate(chunk):
            x[b, : len(r) - 1], y[b, : len(r) - 1] = torch.tensor(r[:-1]), torch.tensor(r[1:])
        (nll,) = infer(_models(models), [{"x": x, "y": y}])             # (B, T); a causal GRU: padding is after
        mask = torch.arange(x.shape[1])[None, :] < n[:, None]
        out += ((nll * mask).sum(1, dtype=torch.float64) / n).tolist()
    return out


def _row(nll: float, n: int, kind: str, prefix: str) -> dict[str, float]:
    loss = nll / max(1, n)
    score = {f"{prefix}ppl": math.exp(min(loss, 700))} if kind == "word" else {f"{prefix}bpc": loss / LN2}
    return {f"{prefix}loss": loss, **score}


def evaluate(run, models, data: str | None = None) -> dict[str, dict[str, float]]:
    """Loss and perplexity (words) or bits per character (char/byte) on valid and test (or on ``data``),
    beside an add-one unigram model of the training text."""
    cfg, meta = run.config, run.meta
    vocab = Vocab.from_dict(meta["vocab"])
    if data is not None:
        sets = {"": encode_file(data, vocab, cfg.encoding, cfg.errors)}
        names = {"": data}
    else:
        _, ids, sources = split_ids(cfg, vocab)
        sets = {f"{k}_": ids[k] for k in ("valid", "test") if k in ids}
        names = {f"{k}_": sources[k] for k in ("valid", "test") if k in ids}
        if not sets:
            raise DataError("no validation or test text to evaluate on; pass `grukit evaluate RUN --data FILE`",
                            path=cfg.data)
    counts = np.asarray(meta["unigram_counts"], dtype=np.float64)
    logp = np.log((counts + 1.0) / (counts.sum() + len(counts)))
    kind = meta["tokenize"]
    table: dict[str, dict[str, float]] = {"grukit": {}, "unigram": {}}
    speed: dict[str, float | None] = {}
    for prefix, ids in sets.items():
        batches = _eval_streams(ids, cfg, names[prefix])
        t0 = time.perf_counter()
        total, n = stream_nll(models, batches)
        dt = time.perf_counter() - t0
        table["grukit"].update(_row(total, n, kind, prefix))
        targets = batches.data[:, 1:].numpy().reshape(-1)
        table["unigram"].update(_row(float(-logp[targets].sum()), n, kind, prefix))
        speed[f"{prefix}tokens"] = n
        speed[f"{prefix}eval_tokens_per_s"] = round(n * len(models) / dt, 1) if dt > 0 else None
    if hasattr(run, "update_info"):
        run.update_info(evaluation=speed)                               # token counts and speed, in run.json
    return table


def predict(run, models, data: str | None, out: str | Path | None = None) -> list[Path]:
    """Per-token surprisal of ``data`` (default: the validation text) as CSV: position, token, nll, bits."""
    import pandas as pd
    cfg, vocab = run.config, Vocab.from_dict(run.meta["vocab"])
    if data is not None:
        ids, name = encode_file(data, vocab, cfg.encoding, cfg.errors), data
    else:
        _, split, sources = split_ids(cfg, vocab)
        key = "valid" if "valid" in split else "train"
        ids, name = split[key], sources[key]
    if len(ids) < 2:
        raise DataError(f"holds {len(ids)} token(s); at least 2 are needed", path=name)
    batches = StreamBatches(ids[None, :], cfg.bptt)                     # one stream: keeps the text order
    _, _, nll = stream_nll(models, batches, per_token=True)
    nll = nll[0].numpy()                                                # (N-1,)
    frame = pd.DataFrame({"position": np.arange(1, len(ids)), "token": [vocab.token(i) for i in ids[1:]],
                          "nll": nll, "bits": nll / LN2})
    return [write_predictions(frame, Path(out) if out else run.path / "predictions.csv")]


# ====================================================================== generation
def check_sampling(length: int, temperature: float, top_k: int, top_p: float) -> None:
    """One ``ConfigError`` naming every sampling option out of range (the CLI, Python and the server check here)."""
    problems = []
    if length < 0:
        problems.append(f"length={length}: expected a number of tokens >= 0")
    if temperature < 0:
        problems.append(f"temperature={temperature}: expected a number >= 0 (0 = always the most likely token)")
    if top_k < 0:
        problems.append(f"top_k={top_k}: expected >= 0 (0 = no limit)")
    if not 0 < top_p <= 1:
        problems.append(f"top_p={top_p}: expected a probability in (0, 1] (1 = no nucleus cut)")
    if problems:
        from ..errors import collect
        collect(problems, ConfigError, "the generation options")


def _choose(logits: Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator) -> int:
    """One token id from (V,) logits: :func:`_choose_rows` for a single row."""
    return int(_choose_rows(logits[None], [temperature], top_k, top_p, [gen])[0])


def _choose_rows(logits: Tensor, temps: list[float], top_k: int, top_p: float,
                 gens: list[torch.Generator]) -> Tensor:
    """(B,) token ids from (B, V) logits, row b at temperature ``temps[b]`` drawing from ``gens[b]``: greedy
    at temperature 0, else top-k / nucleus (top-p) sampling.

    Scaling, the cuts and the softmax run on all rows at once; only the draw is per row: ``V`` Exp(1) values
    from the row's own generator, and the token is ``argmax(p / q)`` (the exponential race, exactly what
    ``torch.multinomial(p, 1, generator=g)`` computes on CPU), so a row's token depends only on its own logits
    and generator, never on its batch companions, and equals a one-row multinomial draw.
    """
    B, V = logits.shape
    greedy = logits.argmax(-1)                                           # (B,)
    hot = [b for b, t in enumerate(temps) if t != 0]
    if not hot:
        return greedy
    rows = torch.tensor(hot) if len(hot) < B else None
    z = (logits if rows is None else logits[rows]).double()             # (R, V) rows that sample
    z = z / torch.tensor([temps[b] for b in hot], dtype=torch.float64)[:, None]
    if 0 < top_k < V:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]                # (R, 1)
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, -1)                                         # (R, V)
    if top_p < 1:
        p_sorted, idx = torch.sort(probs, -1, descending=True)
        cut = torch.cumsum(p_sorted, -1) - p_sorted >= top_p             # drop tokens after mass top_p is reached
        probs = torch.zeros_like(probs).scatter(-1, idx, p_sorted.masked_fill(cut, 0.0))
    q = torch.empty_like(probs)
    for row, b in zip(q.unbind(0), hot):
        row.exponential_(1, generator=gens[b])                           # (V,) this row's own draws
    drawn = (probs / q).argmax(-1)                                       # (R,)
    if rows is None:
        return drawn
    return greedy.index_put((rows,), drawn)


def _text_ids(text: str, vocab: Vocab) -> list[int]:
    """The ids of ``text`` under ``vocab`` (words: without the closing ``<eos>`` tokenize adds)."""
    if vocab.kind == "byte":
        return list(text.encode("utf-8"))
    if vocab.kind == "word":
        return vocab.encode(tokenize(text, "word")[:-1] if text.strip() else []).tolist()
    return vocab.encode(list(text)).tolist()


def _prompt_ids(prompt: str, vocab: Vocab) -> list[int]:
    """A prompt's ids; an empty prompt starts after a boundary (newline; ``<eos>`` first for words)."""
    ids = _text_ids(prompt, vocab)
    if vocab.kind == "byte":
        return ids or [10]                                               # start after a newline
    if vocab.kind == "word":
        return ([vocab.stoi[EOS]] if EOS in vocab.stoi else [0]) + ids   # a sentence boundary first
    return ids or [vocab.stoi.get("\n", 0)]


def _next_scores(members: list[LMTask], ys: list[Tensor]) -> Tensor:
    """(B, V) next-token scores from each member's GRU output (B, H): the logits of one model, the mean of
    the members' log-probabilities for an ensemble (the ``mean`` rule of ``infer``)."""
    if len(members) == 1:
        return members[0].logits(ys[0])
    return torch.stack([torch.log_softmax(m.logits(y), -1) for m, y in zip(members, ys)]).mean(0)


def generate(models, meta: dict, prompts: list[str], length: int = 200, temperature: float | list[float] = 1.0,
             seed: int | list[int] | None = None, *, top_k: int = 0, top_p: float = 1.0) -> Iterator[list[str]]:
    """THE text generation loop: continue every prompt by ``length`` tokens, all prompts together.

    Yields, once per step, the list of new text pieces (one per prompt, in order; a piece may be ``""`` while
    a byte model is inside a multi-byte character; the last step's pieces include any flushed tail). The
    prompts prime the GRU state in one batched forward pass; every new token is then ONE batched
    :meth:`grukit.nn.GRU.step` for all prompts (per ensemble member). ``temperature`` (one for all prompts or
    one per prompt) 0 is greedy; ``top_k`` / ``top_p`` cut the distribution. Each prompt draws from its own
    generator, seeded ``seed + i`` for prompt i (or ``seed[i]`` when a list is given), so a prompt's text
    depends only on its own seed, never on which prompts share the batch. Options are checked before the
    first step. The models' GRU weights are checked once, when generation starts (``frozen_weights``): do not
    change them until the generator is exhausted or closed.
    """
    temps = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature] * len(prompts)
    if len(temps) != len(prompts):
        raise ConfigError(f"{len(temps)} temperatures for {len(prompts)} prompts; give one, or one per prompt")
    for t in set(temps) or {1.0}:
        check_sampling(length, t, top_k, top_p)
    if isinstance(seed, (list, tuple)):
        if len(seed) != len(prompts):
            raise ConfigError(f"{len(seed)} seeds for {len(prompts)} prompts; give one, or one per prompt")
        seeds = [int(x) for x in seed]
    else:
        base = int(seed) if seed is not None else int(torch.seed() % (2 ** 62))
        seeds = [base + i for i in range(len(prompts))]
    members = _models(models)
    if not members:
        raise ConfigError("generate() needs at least one model")
    vocab = Vocab.from_dict(meta["vocab"])
    rows = [_prompt_ids(p, vocab) for p in prompts]
    return _generate(members, vocab, rows, length, temps, top_k, top_p, seeds)


@torch.no_grad()
def _generate(members, vocab: Vocab, rows: list[list[int]], length: int, temps: list[float], top_k: int,
              top_p: float, seeds: list[int]) -> Iterator[list[str]]:
    B = len(rows)
    if B == 0 or length == 0:
        return
    was = [m.training for m in members]
    for m in members:
        m.eval()
    try:
        with frozen_weights(*members):                                  # weights checked once, not per token
            gens = [torch.Generator().manual_seed(s) for s in seeds]             # one per prompt
            P = torch.tensor([len(r) for r in rows])                        # (B,) prompt lengths
            x = torch.zeros(B, int(P.max()), dtype=torch.int64)             # (B, P_max) padded after each prompt
            for b, r in enumerate(rows):
                x[b, : len(r)] = torch.tensor(r)
            ys, hs = [], []
            for m in members:                                               # priming: one forward per member
                if bool((P == P[0]).all()):
                    seq, h = m.encode({"x": x})                             # (B, P, H), (L, B, H)
                else:
                    seq, h = m.encoder(m.drop(m.embedding(x)), None, lengths=P)
                ys.append(seq[torch.arange(B), P - 1])                      # (B, H) output at each last prompt token
                hs.append(h)
            logits = _next_scores(members, ys)                              # (B, V)
            decoders = [vocab.decoder() for _ in range(B)]
            for step in range(length):
                tok = _choose_rows(logits, temps, top_k, top_p, gens)        # (B,) all rows at once
                pieces = [decoders[b]([t]) for b, t in enumerate(tok.tolist())]
                if step == length - 1:
                    pieces = [p + decoders[b]([], True) for b, p in enumerate(pieces)]
                yield pieces
                if step == length - 1:
                    break
                for i, m in enumerate(members):
                    ys[i], hs[i] = m.encoder.step(m.embedding(tok), hs[i])   # (B, H), (L, B, H)
                logits = _next_scores(members, ys)                          # (B, V)
    finally:
        for m, t in zip(members, was):
            m.train(t)


def sample(model, vocab: Vocab, prompt: str = "", length: int = 200, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
           on_text: Callable[[str], None] | None = None) -> str:
    """Continue one ``prompt`` by ``length`` tokens with :func:`generate`; returns the continuation (without
    the prompt). ``on_text`` receives each piece of text as soon as it is produced (streaming); the pieces
    joined are the returned string. The same ``seed`` gives the same text."""
    pieces: list[str] = []
    for (piece,) in generate(model, {"vocab": vocab.to_dict()}, [prompt], length, temperature, seed,
                             top_k=top_k, top_p=top_p):
        if piece:
            pieces.append(piece)
            if on_text is not None:
                on_text(piece)
    return "".join(pieces)


def _joiner(prompt: str, kind: str) -> str:
    return " " if kind == "word" and prompt and not prompt[-1].isspace() else ""


def generate_text(run, prompt: str = "", length: int = 200, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, seed: int | None = None, include_prompt: bool = True,
                  on_text: Callable[[str], None] | None = None) -> str:
    """Python API: text from a trained run (a :class:`~grukit.runs.Run` or its directory); every member of
    an ensemble run takes part."""
    from ..runs import open_run
    if not hasattr(run, "models"):
        run = open_run(run, "lm")
    vocab = Vocab.from_dict(run.meta["vocab"])
    head = prompt + _joiner(prompt, vocab.kind) if include_prompt else ""
    if head and on_text is not None:
        on_text(head)
    return head + sample(run.models(), vocab, prompt, length, temperature, top_k, top_p, seed, on_text)


def generate_run(run, models, prompt: str = "", length: int = 500, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, out: str | Path | None = None,
                 stream=None, **unknown) -> list[Path]:
    """`grukit generate RUN`: stream the prompt and its continuation to stdout as produced, or write ``out``.

    Returns the written paths (none when streaming to stdout).
    """
    if unknown:
        raise ConfigError(f"the lm task has no generation option(s) {', '.join(sorted(unknown))}; it takes "
                          "--prompt, --length, --temperature, --top-k, --top-p, --seed, --out")
    vocab = Vocab.from_dict(run.meta["vocab"])
    check_sampling(length, temperature, top_k, top_p)
    stream = stream if stream is not None else (None if out else sys.stdout)

    def emit(s: str) -> None:
        stream.write(s)
        stream.flush()

    on_text = emit if stream is not None else None
    head = prompt + _joiner(prompt, vocab.kind)
    if on_text:
        on_text(head)
    t0 = time.perf_counter()
    text = head + sample(models, vocab, prompt, length, temperature, top_k, top_p, seed, on_text)
    dt = time.perf_counter() - t0
    if on_text:
        on_text("\n")
    print(f"[{length} tokens in {dt:.2f} s: {length / dt if dt > 0 else float('nan'):.0f} tokens/s]",
          file=sys.stderr)
    if out:
        from ..io import atomic_write
        return [atomic_write(out, text)]
    return []
