"""Character-level GRU language model on tiny-shakespeare, within a wall-clock budget.

Split as nanoGPT's ``shakespeare_char``: the first 90% of characters train, the last 10% validate. The script
trains for at most ``--minutes`` (the run stops itself, keeps the best checkpoint and evaluates), then reports
the validation loss in nats per character (nanoGPT's number: 1.47 on a GPU, ~1.88 for its small CPU config),
bits per character, training and generation speed in tokens per second, and a sample.

    python examples/lm_shakespeare.py                    # 30-minute budget, ../shared/data/tinyshakespeare
    python examples/lm_shakespeare.py --minutes 5 --hidden-size 256 --out /tmp/lm_small

Target from the issue: validation loss <= 1.55 nats per character within 30 minutes on a 2-core CPU.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from lm_common import base_args, measure, publish   # examples/lm_common.py

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def main(argv=None) -> int:
    ap = base_args(__doc__.splitlines()[0], str(DEFAULT_DATA), "/tmp/lm_shakespeare", 30.0)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--embedding-size", type=int, default=64)
    ap.add_argument("--bptt", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-epochs", type=int, default=100)
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"skipping: {args.data} not found", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    from grukit.train import fit

    t0 = time.time()
    run = fit("lm", data=args.data, out=args.out, tokenize="char", val_fraction=0.1, test_fraction=0.0,
              hidden_size=args.hidden_size, num_layers=args.num_layers, embedding_size=args.embedding_size,
              tie_weights=False, bptt=args.bptt, batch_size=args.batch_size, eval_batch_size=16,
              dropout=args.dropout, lr=args.lr, lr_decay=0.5, lr_patience=0, gradient_clip_val=1.0,
              max_epochs=args.max_epochs, patience=4, max_minutes=args.minutes, progress=False, seed=0)
    common, sample = measure(run, "ROMEO:", 500, time.time() - t0, args)
    metrics = json.loads((run.path / "metrics.json").read_text())
    val = metrics["grukit"]["valid_loss"]
    publish(run, {"valid_loss_nats_per_char": round(val, 4), "valid_bpc": round(val / math.log(2), 4),
                  "unigram_valid_loss": round(metrics["unigram"]["valid_loss"], 4), **common,
                  "target_met": val <= 1.55}, sample)
    return 0

if __name__ == "__main__":
    sys.exit(main())
