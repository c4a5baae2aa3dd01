"""Train a small GRU classifier for one epoch under Lightning (DDP when DEVICES > 1) and save its weights.

Used by tests/test_ddp.py: ``python tests/ddp_worker.py DEVICES BATCH_SIZE OUT.safetensors [lm TEXT]``. Lightning gives
each rank a DistributedSampler; its shuffled order depends only on the seed and the epoch, and rank r takes
every DEVICES-th sample of it. So with BATCH_SIZE per process each optimiser step sees the same global batch as
one DDP process (DEVICES = 1) with DEVICES * BATCH_SIZE.

``lm TEXT``: a character language model on TEXT with BATCH_SIZE parallel streams in all; under DDP rank r
carries its own share of the streams across consecutive windows (grukit.tasks.language.RankStreams).
"""
import sys

import lightning as L
import numpy as np
import torch

from grukit.config import TaskConfig
from grukit.data.batching import DictDataset, loader
from grukit.runs import save_weights
from grukit.tasks.estimator_task import EstimatorTask


def main(devices: int, batch_size: int, out: str) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 10, 3)).astype("float32")
    y = (X[:, :, 0].mean(1) > 0).astype("int64")
    cfg = TaskConfig.from_dict(dict(hidden_size=8, num_layers=2, max_epochs=1, lr=1e-2, lr_schedule="none",
                                    val_fraction=0.0, seed=0))
    torch.manual_seed(0)
    model = EstimatorTask(cfg, {"input_size": 3, "out_size": 2, "pooling": "mean", "has_val": False,
                                "kind": "classification"})
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=devices,
                        strategy="ddp", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    trainer.fit(model, loader(DictDataset(x=X, y=y), batch_size, shuffle=False))
    if trainer.global_rank == 0:
        save_weights(model.state_dict(), out)
        moved = max(float((v - start[k]).abs().max()) for k, v in model.state_dict().items())
        print(f"steps={trainer.global_step} world_size={trainer.world_size} moved={moved}")


def main_lm(devices: int, batch_size: int, out: str, text: str) -> None:
    from grukit.tasks import language
    from grukit.tasks.language_config import LMConfig
    torch.set_num_threads(1)
    cfg = LMConfig.from_dict(dict(data=text, tokenize="char", hidden_size=8, num_layers=2, embedding_size=8,
                                  dropout=0.0, bptt=8, batch_size=batch_size, val_fraction=0.0, test_fraction=0.0,
                                  lr=1e-2, lr_schedule="none", max_epochs=1, seed=0))
    prepared = language.prepare(cfg)
    torch.manual_seed(0)
    model = language.LMTask(cfg, prepared.meta)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=devices, strategy="ddp", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0)
    trainer.fit(model, prepared.train)
    if trainer.global_rank == 0:
        save_weights(model.state_dict(), out)
        moved = max(float((v - start[k]).abs().max()) for k, v in model.state_dict().items())
        print(f"steps={trainer.global_step} world_size={trainer.world_size} moved={moved}")


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[4] == "lm":
        main_lm(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[5])
    else:
        main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
