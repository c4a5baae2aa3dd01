"""LMConfig: options of the language-model task (torch-free, read by the CLI at start-up)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import TaskConfig, choice, opt

__all__ = ["LMConfig"]


@dataclass
class LMConfig(TaskConfig):
    """Character, word or byte language model: embedding, stacked GRU, dropout, (tied) decoder; TBPTT."""

    data: str = opt("", "UTF-8 text file, folder of text files, or a folder with train/valid/test files "
                        "(Penn Treebank layout)")
    valid_data: str = opt("", "separate validation text (default: the valid file of a PTB folder, else the tail "
                              "of --data)")
    test_data: str = opt("", "separate test text (default: the test file of a PTB folder, else the tail of "
                             "--data)")
    tokenize: str = opt("char", "tokens: char, word (whitespace, <eos> per line) or byte (256 symbols)")
    min_freq: int = opt(1, "word vocabulary: keep words seen at least this often in train (others are <unk>)")
    max_size: int = opt(0, "word/char vocabulary: at most this many entries incl. <unk> (0 = no limit)")
    encoding: str = opt("utf-8", "text encoding of the files (char/word)")
    errors: str = opt("strict", "undecodable bytes: strict (report file and offset), replace or ignore")
    val_fraction: float = opt(0.05, "single text: tail fraction held out for validation / early stopping")
    test_fraction: float = opt(0.05, "single text: tail fraction held out for the test metrics (after valid)")
    bptt: int = opt(64, "truncated BPTT window: tokens per training window (state carried across windows)")
    batch_size: int = opt(32, "parallel contiguous streams per batch")
    eval_batch_size: int = opt(10, "parallel streams for validation and test")
    embedding_size: int = opt(128, "token embedding size")
    tie_weights: bool = opt(True, "share the embedding with the decoder (Press & Wolf 2017; a projection is "
                                  "added when hidden_size differs)")
    hidden_size: int = opt(256, "GRU units per layer")
    num_layers: int = opt(2, "stacked GRU layers")
    dropout: float = opt(0.2, "dropout on embeddings, between GRU layers and before the decoder")
    weight_drop: float = opt(0.0, "DropConnect on the GRU's recurrent weights (Merity et al. 2018, AWD): one "
                                  "mask per batch, so the fused kernels still run; 0 = off")
    softmax: str = opt("full", "output layer: full softmax, or adaptive (Grave et al. 2017: frequent words in a "
                               "small head, rare ones in cheaper clusters; much faster for large word vocabularies)")
    cutoffs: tuple[int, ...] = opt((), "adaptive softmax cluster boundaries in vocabulary ids (frequency order); "
                                       "empty: 20% and 60% of the vocabulary")
    optimizer: str = opt("adam", "adam (AdamW) or sgd (plain SGD, Zaremba et al.)")
    lr: float = opt(2e-3, "learning rate (AdamW or SGD, see optimizer)")
    lr_decay: float = opt(0.5, "factor applied to the learning rate when validation loss stalls")
    lr_patience: int = opt(0, "epochs without validation improvement before the learning rate decays")
    gradient_clip_val: float = opt(1.0, "clip the gradient norm to this value (0 = off)")
    max_epochs: int = opt(20, "upper bound on training epochs")
    patience: int = opt(3, "early stopping: epochs without validation-perplexity improvement")

    tune_space: ClassVar[dict[str, Any]] = {   # `grukit tune lm` search space
        "hidden_size": [128, 256, 512],
        "num_layers": [1, 2, 3],
        "embedding_size": [64, 128, 256],
        "dropout": {"low": 0.0, "high": 0.5},
        "bptt": [32, 64, 128],
        "lr": {"low": 5e-4, "high": 5e-3, "log": True},
    }

    def problems(self) -> list[str]:
        p = super().problems()
        choice(p, "tokenize", self.tokenize, ["char", "word", "byte"])
        choice(p, "optimizer", self.optimizer, ["adam", "sgd"])
        choice(p, "softmax", self.softmax, ["full", "adaptive"])
        if self.softmax == "adaptive" and self.tie_weights:
            p.append("tie_weights=True with softmax=adaptive: the adaptive softmax has its own cluster weights; "
                     "pass --no-tie-weights")
        if list(self.cutoffs) != sorted(set(self.cutoffs)) or any(c < 1 for c in self.cutoffs):
            p.append(f"cutoffs={list(self.cutoffs)}: expected increasing positive vocabulary ids")
        choice(p, "errors", self.errors, ["strict", "replace", "ignore"])
        if self.bptt < 1 or self.eval_batch_size < 1 or self.embedding_size < 1:
            p.append(f"bptt={self.bptt}, eval_batch_size={self.eval_batch_size}, embedding_size="
                     f"{self.embedding_size}: expected integers >= 1")
        if self.min_freq < 1 or self.max_size < 0:
            p.append(f"min_freq={self.min_freq}, max_size={self.max_size}: expected min_freq >= 1, "
                     "max_size >= 0")
        if not 0.0 <= self.test_fraction < 1.0 or self.val_fraction + self.test_fraction >= 1.0:
            p.append(f"val_fraction={self.val_fraction}, test_fraction={self.test_fraction}: expected "
                     "fractions in [0, 1) that leave some training text")
        if not 0.0 < self.lr_decay <= 1.0 or self.lr_patience < 0:
            p.append(f"lr_decay={self.lr_decay}, lr_patience={self.lr_patience}: expected 0 < lr_decay <= 1, "
                     "lr_patience >= 0")
        if not 0.0 <= self.weight_drop < 1.0:
            p.append(f"weight_drop={self.weight_drop}: expected a probability in [0, 1)")
        if self.bidirectional:
            p.append("bidirectional=True: a language model predicts the next token from the past only; "
                     "pass --no-bidirectional")
        return p
