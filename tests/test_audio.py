"""grukit.data.audio: features against librosa, streaming features, layouts, manifests, bad files."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import need
from grukit.data import audio
from grukit.errors import DataError

RATE = 8000


def _tone(seconds=0.37, freq=440.0, rate=RATE, amp=0.3, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (amp * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _librosa_logmel(x, spec):
    import librosa
    M = librosa.feature.melspectrogram(y=x, sr=spec.rate, n_fft=spec.n_fft, hop_length=spec.hop,
                                       win_length=spec.win, n_mels=spec.n_mels, fmin=spec.fmin,
                                       fmax=spec.fmax or spec.rate / 2, power=2.0)
    return librosa.power_to_db(M, top_db=None)                               # (n_mels, T)


@pytest.mark.parametrize("rate,n_mels", [(8000, 40), (16000, 64)])
def test_logmel_and_mfcc_match_librosa(rate, n_mels):
    import librosa
    x = _tone(rate=rate)
    spec = audio.FeatureSpec(rate=rate, n_mels=n_mels)
    ref = _librosa_logmel(x, spec)
    got = audio.features(x, spec)
    assert got.shape == ref.T.shape == (1 + len(x) // spec.hop, n_mels)
    np.testing.assert_allclose(got, ref.T, atol=1e-3)
    mspec = audio.FeatureSpec(kind="mfcc", rate=rate, n_mels=n_mels, n_mfcc=13)
    ref_mfcc = librosa.feature.mfcc(S=ref, n_mfcc=13)
    got_mfcc = audio.features(x, mspec)
    assert got_mfcc.shape == ref_mfcc.T.shape == (1 + len(x) // spec.hop, 13)
    np.testing.assert_allclose(got_mfcc, ref_mfcc.T, atol=1e-2)


def test_fsdd_file_features_match_librosa(data_dir):
    f = need(data_dir / "fsdd" / "recordings" / "0_george_0.wav")
    x, rate = audio.read_audio(f)
    assert rate == 8000 and x.dtype == np.float32 and x.ndim == 1
    spec = audio.FeatureSpec(rate=rate)
    np.testing.assert_allclose(audio.features(x, spec), _librosa_logmel(x, spec).T, atol=1e-3)


@pytest.mark.parametrize("chunk", [1, 79, 80, 333, 10_000])
def test_streaming_features_equal_whole(chunk):
    x = _tone(0.5)
    spec = audio.FeatureSpec(rate=RATE)
    st = audio.StreamingFeatures(spec)
    parts = [st.push(x[i: i + chunk]) for i in range(0, len(x), chunk)] + [st.finish()]
    np.testing.assert_array_equal(np.concatenate(parts), audio.features(x, spec))


def test_features_in_blocks_equal_one_call(monkeypatch):
    """Features are computed BLOCK frames at a time (large calls' temporaries cost more per frame): the
    values are exactly those of one call over all frames, offline and for many streams in one push_many."""
    spec = audio.FeatureSpec(rate=8000, n_mels=20)
    rng = np.random.default_rng(3)
    x = rng.normal(size=spec.hop * (2 * audio.BLOCK + 37)).astype(np.float32)       # > 2 blocks of frames
    blocked = audio.features(x, spec)
    assert len(blocked) > 2 * audio.BLOCK
    chunks = [x[k * 900:(k + 1) * 900] for k in range(60)]                           # 60 streams, ~11 frames each
    many = audio.StreamingFeatures.push_many([audio.StreamingFeatures(spec) for _ in chunks], chunks)
    assert sum(map(len, many)) > audio.BLOCK
    monkeypatch.setattr(audio, "BLOCK", 10 ** 9)
    assert np.array_equal(blocked, audio.features(x, spec))
    one = audio.StreamingFeatures.push_many([audio.StreamingFeatures(spec) for _ in chunks], chunks)
    assert all(np.array_equal(a, b) for a, b in zip(many, one))


def test_spec_augment_masks_within_lengths():
    import torch
    x = torch.ones(3, 50, 20)
    lengths = torch.tensor([50, 30, 10])
    y = audio.spec_augment(x, lengths, freq_masks=1, freq_width=5, time_masks=1, time_width=8,
                           generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and (y == 0).any() and torch.equal(x, torch.ones(3, 50, 20))
    assert ((y == 0).float().mean(dim=(1, 2)) < 0.5).all()


def test_normalise_modes():
    f = [np.arange(12, dtype=np.float32).reshape(6, 2), np.ones((3, 2), np.float32)]
    u = audio.normalise(f, "utterance")
    np.testing.assert_allclose(u[0].mean(0), 0, atol=1e-6)
    g = audio.normalise(f, "global", mean=[1, 1], std=[2, 2])
    np.testing.assert_allclose(g[1], 0)


# ---------------------------------------------------------------- reading and bad inputs
def _write(path, x, rate=RATE, subtype="PCM_16"):
    sf.write(str(path), x, rate, subtype=subtype)
    return path


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_read_formats_and_resample(tmp_path, ext):
    x = _tone(0.5, rate=16000)
    f = _write(tmp_path / f"a{ext}", x, 16000, None if ext == ".ogg" else "PCM_16")
    y, rate = audio.read_audio(f, 8000)
    assert rate == 8000 and abs(len(y) - len(x) // 2) <= 2
    y16, rate16 = audio.read_audio(f)
    assert rate16 == 16000 and len(y16) == len(x)


def test_stereo_is_averaged(tmp_path):
    x = np.stack([_tone(0.2), np.zeros(int(0.2 * RATE), np.float32)], 1)
    y, _ = audio.read_audio(_write(tmp_path / "s.wav", x))
    np.testing.assert_allclose(y, x.mean(1), atol=1e-4)


def test_bad_audio_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.wav: the audio file is empty"):
        audio.read_audio(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not a RIFF file at all" * 10)
    with pytest.raises(DataError, match=r"junk\.wav: cannot read audio"):
        audio.read_audio(junk)
    silent = _write(tmp_path / "nosamples.wav", np.zeros(0, np.float32))
    with pytest.raises(DataError, match=r"nosamples\.wav: the audio file holds no samples"):
        audio.read_audio(silent)
    rate = _write(tmp_path / "rate.wav", _tone(0.2, rate=16000), 16000)
    with pytest.raises(DataError, match=r"rate\.wav: sample rate 16000 Hz, expected 8000 Hz"):
        audio.read_audio(rate, 8000, resample=False)
    clipped = _write(tmp_path / "clipped.wav", np.clip(_tone(0.3, amp=3.0), -1, 1))
    with pytest.raises(DataError, match=r"clipped\.wav: the audio is clipped: .*% of samples"):
        audio.read_audio(clipped)
    audio.read_audio(clipped, clip_fraction=1.0)                        # the check can be switched off
    with pytest.raises(DataError, match=r"missing\.wav: audio file not found"):
        audio.read_audio(tmp_path / "missing.wav")


# ---------------------------------------------------------------- layouts
def _fsdd_like(root, speakers=("ann", "bob"), labels=("0", "1", "2"), indices=range(7)):
    root.mkdir(parents=True, exist_ok=True)
    for s, spk in enumerate(speakers):
        for lab in labels:
            for i in indices:
                _write(root / f"{lab}_{spk}_{i}.wav", _tone(0.15, 300 + 150 * int(lab) + 20 * s, seed=i))
    return root


def test_fsdd_folder_splits(tmp_path):
    root = _fsdd_like(tmp_path / "rec")
    utts = audio.scan_folder(root)
    assert len(utts) == 42 and {u.text for u in utts} == {"0", "1", "2"} and {u.speaker for u in utts} == {"ann", "bob"}
    train, _ = audio.read_labelled(str(root), "train")
    test, _ = audio.read_labelled(str(root), "test")
    assert len(test) == 2 * 3 * 5 and all(u.index < 5 for u in test) and all(u.index >= 5 for u in train)
    held, _ = audio.read_labelled(f"{root}?test_speaker=bob", "test")
    assert {u.speaker for u in held} == {"bob"} and len(held) == 21
    assert audio.has_split(str(root)) and audio.is_audio_source(str(root))
    from grukit.data.speech import source_options
    from grukit.tasks.speech_config import SpeechConfig
    opts = source_options(SpeechConfig(test_speaker="bob"))                  # --test-speaker, a config field
    assert audio.read_labelled(str(root), "test", opts)[0] == held
    assert audio.read_labelled(f"{root}?test_speaker=ann", "test", opts)[0] == held   # the field wins
    with pytest.raises(DataError, match="test_speaker='eve' is not among the speakers"):
        audio.read_labelled(f"{root}?test_speaker=eve", "test")
    feats, labels, _ = audio.labelled_features(str(root), "test")
    assert len(feats) == len(labels) == 30 and feats[0].shape[1] == 40
    cmvn, _, _ = audio.labelled_features(f"{root}?norm=utterance&features=mfcc", "test")
    assert cmvn[0].shape[1] == 13 and np.allclose(cmvn[0].mean(0), 0, atol=1e-4)
    with pytest.raises(DataError, match="norm='bad'"):
        audio.labelled_features(f"{root}?norm=bad", "test")


def test_class_subfolders(tmp_path):
    for lab in ("yes", "no"):
        (tmp_path / lab).mkdir()
        for i in range(2):
            _write(tmp_path / lab / f"{i}.wav", _tone(0.1, seed=i))
    utts = audio.scan_folder(tmp_path)
    assert sorted(u.text for u in utts) == ["no", "no", "yes", "yes"]
    assert not audio.has_split(str(tmp_path))
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DataError, match="no audio files"):
        audio.scan_folder(empty)


def test_manifest_csv_and_tsv(tmp_path):
    (tmp_path / "clips").mkdir()
    for n in ("a", "b"):
        _write(tmp_path / "clips" / f"{n}.wav", _tone(0.1))
    (tmp_path / "m.csv").write_text("path,transcript\nclips/a.wav,Seven  Three\nclips/b.wav,nine\n")
    (tmp_path / "m.tsv").write_text("audio\ttext\nclips/a.wav\tseven three\n\nclips/b.wav\tnine\n")
    for name in ("m.csv", "m.tsv"):
        utts = audio.read_manifest(tmp_path / name)
        assert [u.text.lower().split() for u in utts] == [["seven", "three"], ["nine"]]
        assert utts[0].path == str((tmp_path / "clips" / "a.wav").resolve())
        assert audio.is_audio_source(str(tmp_path / name))


def test_manifest_problems_are_reported_with_lines(tmp_path):
    _write(tmp_path / "a.wav", _tone(0.1))
    outside = tmp_path.parent / f"{tmp_path.name}_outside.wav"
    _write(outside, _tone(0.1))
    sub = tmp_path / "sub"
    sub.mkdir()
    m = sub / "m.csv"
    m.write_text(f"path,transcript\n../a.wav,one\nmissing.wav,two\n{outside},three\n")
    with pytest.raises(DataError) as e:
        audio.read_manifest(m)
    msg = str(e.value)
    assert "m.csv" in msg and "3 problems" in msg and "line 2: path '../a.wav' leaves the manifest's folder" in msg
    assert "line 3: audio file 'missing.wav' not found" in msg and "line 4:" in msg
    m.write_text(f"path,transcript\n../a.wav,one\n{outside},three\n")
    assert len(audio.read_manifest(m, allow_outside=True)) == 2
    assert len(audio.read_labelled(f"{m}?allow_outside=1")[0]) == 2
    assert len(audio.read_labelled(str(m), options={"allow_outside": "1"})[0]) == 2    # a config field
    bad = sub / "bad.csv"
    bad.write_text("name,words\nx.wav,one\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 1: header .* expected a path column"):
        audio.read_manifest(bad)
    (sub / "e.tsv").write_text("")
    with pytest.raises(DataError, match=r"e\.tsv: the manifest is empty"):
        audio.read_manifest(sub / "e.tsv")


def test_concat_builder_is_reproducible_and_single_speaker(tmp_path):
    root = _fsdd_like(tmp_path / "rec")
    pool = audio.scan_folder(root)
    a = audio.concat_utterances(pool, 6, RATE, min_words=3, max_words=5, seed=3)
    b = audio.concat_utterances(pool, 6, RATE, min_words=3, max_words=5, seed=3)
    c = audio.concat_utterances(pool, 6, RATE, min_words=3, max_words=5, seed=4)
    assert [u.text for u in a] == [u.text for u in b] and all(np.array_equal(x.samples, y.samples)
                                                            for x, y in zip(a, b))
    assert [u.text for u in a] != [u.text for u in c]
    for u in a:
        words = u.text.split()
        assert 3 <= len(words) <= 5 and set(words) <= {"zero", "one", "two"}
        assert len(u.samples) > len(words) * 0.15 * RATE
