"""grukit.tasks: the tasks built on :class:`grukit.tasks.base.SequenceTask`, and their registry.

Importing this package is cheap (no torch): task classes load on first attribute access.
"""
from __future__ import annotations

import importlib

from .registry import TaskEntry, get, names, register

__all__ = ["TaskEntry", "get", "names", "register", "SequenceTask", "ForecastTask", "ClassifyTask",
           "AutoencoderTask", "SpeechTask"]

_LAZY = {"SequenceTask": ".base", "ForecastTask": ".forecast", "ClassifyTask": ".classify",
         "AutoencoderTask": ".autoencoder", "SpeechTask": ".speech"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- built-in tasks: one register() line per task (other tasks add theirs here)
register("forecast", config="grukit.tasks.forecast_config:ForecastConfig", module="grukit.tasks.forecast",
         help="multi-horizon forecasting of one or many series (CSV/Parquet or a built-in series)",
         examples=["grukit train forecast --data airline --horizon 24",
                   "grukit train forecast --data sales.csv --time-col date --target sales --id-col store "
                   "--known price --lookback 28 --horizon 7"])
register("classify", config="grukit.config:ClassifyConfig", module="grukit.tasks.classify",
         help="sequence classification (.npz, long-format CSV, .ts, UCR archive .tsv or a built-in set)",
         examples=["grukit train classify --data japanese_vowels --bidirectional",
                   "grukit train classify --data train.npz --test-data test.npz --pooling attention"])
register("autoencoder", config="grukit.config:AutoencoderConfig", module="grukit.tasks.autoencoder",
         help="unsupervised anomaly detection with a GRU seq2seq autoencoder",
         examples=["grukit train autoencoder --data kdd_tsad_135",
                   "grukit train autoencoder --data machine.csv --label-col anomaly --window 50"])
register("lm", config="grukit.tasks.language_config:LMConfig", module="grukit.tasks.language",
         help="character, word or byte language model on any text (TBPTT); use it with `grukit generate`",
         examples=["grukit train lm --data input.txt --tokenize char --hidden-size 512 --bptt 128",
                   "grukit train lm --data ptb/ --tokenize word --hidden-size 650 --dropout 0.5 --bptt 35",
                   "grukit generate runs/lm --prompt 'ROMEO:' --length 500 --temperature 0.8 --seed 1"])
register("music", config="grukit.tasks.music_config:MusicConfig", module="grukit.tasks.music",
         help="polyphonic music: a GRU over piano-roll frames (.mat rolls, MIDI folders, bach_chorales); "
              "use it with `grukit generate`",
         examples=["grukit train music --data ../shared/data/polyphonic_mat/JSB_Chorales.mat",
                   "grukit train music --data midi/ --quantize beats --frames-per-beat 4 --output nade",
                   "grukit generate runs/music --prompt data:0 --seconds 30 --temperature 0.9 --seed 1"])
register("speech", config="grukit.tasks.speech_config:SpeechConfig", module="grukit.tasks.speech",
         help="speech recognition: conv front end, GRU stack, CTC (manifest of path,transcript or an "
              "FSDD-style word folder built into digit strings); use it with `grukit transcribe`",
         examples=["grukit train speech --data ../shared/data/fsdd/recordings --max-epochs 30",
                   "grukit train speech --data train.tsv --test-data test.tsv --bidirectional",
                   "grukit transcribe runs/speech clip.wav --stream"])
