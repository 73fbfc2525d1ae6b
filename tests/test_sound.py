"""anomaly.sound: what a reference hears at each resolution, on synthetic machines made here.

A tonal line that appears, and a rhythm that changes, are the two kinds of fault the mel blocks blur; each
has a block of its own, and these tests show each block hearing its fault where the mel blocks do not.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from sklearn.covariance import LedoitWolf

from anomaly.distances import BlockDistance
from anomaly.features import FeatureParams, log_mel
from anomaly.reference import Recipe, Reference
from anomaly.sound import BLOCKS, MODULATION_EDGES_HZ, Sound, segment_blocks

SR = 16000
PARAMS = FeatureParams()
MEL_ONLY = Recipe(("pmean", "dbmean", "dbstd", "dbmax", "level"), "mahalanobis", "mean")


def sound(y: np.ndarray) -> Sound:
    return Sound(log_mel(y, PARAMS), PARAMS.sr, PARAMS.hop_length, y)


def humming(seed: int, *, tone: float = 0.0, seconds: float = 4.0) -> np.ndarray:
    """White noise (its gain wanders by about 0.4 dB from clip to clip) under 120 Hz harmonics; ``tone``
    adds a line of that amplitude at 2003 Hz, inside one mel band that the noise fills."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    y = rng.normal(0, 0.05, len(t)) * 10 ** (rng.normal(0, 0.4) / 20)
    y += sum(0.02 / k * np.sin(2 * np.pi * 120 * k * t + rng.uniform(0, 6)) for k in range(1, 8))
    y += tone * np.sin(2 * np.pi * 2003 * t)
    return y.astype(np.float32)


def clicking(seed: int, *, rate: float = 4.0, seconds: float = 4.0) -> np.ndarray:
    """A valve: clicks at ``rate`` per second over a quiet hiss, with the same energy per second at any
    rate (so a change of rate is not a change of level)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    y = rng.normal(0, 0.02, n)
    click = np.exp(-np.arange(400) / 60.0) * rng.normal(0, 1, 400)
    amp = 0.3 * np.sqrt(4.0 / rate)
    for t0 in np.arange(rng.uniform(0, 1 / rate), seconds, 1 / rate):
        i = int(t0 * SR)
        part = click[: max(0, min(400, n - i))]
        y[i : i + len(part)] += amp * part
    return (y * 10 ** (rng.normal(0, 0.3) / 20)).astype(np.float32)


def margin(recipe: Recipe, normals, new_normals, faults) -> float:
    """Lowest fault score over the highest score of normal clips the reference was not fitted on (above 1:
    every fault is ranked above every normal)."""
    ref = Reference(recipe, sr=SR, hop_length=PARAMS.hop_length).fit([sound(y) for y in normals])
    return min(ref.score(sound(y)) for y in faults) / max(ref.score(sound(y)) for y in new_normals)


def test_a_new_tonal_line_is_heard_by_the_lines_block_and_missed_by_the_mel_blocks():
    normals = [humming(i) for i in range(8)]
    new_normals = [humming(100 + i) for i in range(8)]
    faults = [humming(200 + i, tone=0.006) for i in range(4)]
    assert margin(Recipe(("lines",), "mahalanobis", "mean"), normals, new_normals, faults) > 2.0
    assert margin(Recipe(("lines",), "nearest", "mean"), normals, new_normals, faults) > 1.0
    # In its mel band the line adds about 0.3 dB, less than the clips' own wander: unheard there.
    assert margin(MEL_ONLY, normals, new_normals, faults) < 1.0


def test_a_change_of_click_rate_is_heard_by_the_timing_block_and_missed_by_the_mel_blocks():
    normals = [clicking(i) for i in range(8)]
    new_normals = [clicking(100 + i) for i in range(8)]
    faults = [clicking(200 + i, rate=5.5) for i in range(4)]
    for distance in ("mahalanobis", "nearest"):
        assert margin(Recipe(("timing",), distance, "mean"), normals, new_normals, faults) > 1.5, distance
    assert margin(MEL_ONLY, normals, new_normals, faults) < 1.0
    # The max fusion keeps the departing block from being drowned by the quiet ones.
    assert margin(Recipe(("pmean", "dbmean", "timing"), "mahalanobis", "max"), normals, new_normals, faults) > 1.5


def test_lines_and_timing_do_not_move_with_the_recording_level():
    y = clicking(3) + humming(3)
    quiet, loud = sound(y), sound(y).scaled(12.0)
    a = segment_blocks(quiet, 0, quiet.n_frames, BLOCKS)
    b = segment_blocks(loud, 0, loud.n_frames, BLOCKS)
    for block in ("lines", "timing", "dbstd"):
        np.testing.assert_allclose(a[block], b[block], atol=1e-3, err_msg=block)
    for block in ("pmean", "fine", "level"):
        np.testing.assert_allclose(b[block] - a[block], 12.0, atol=1e-3, err_msg=block)


def test_block_shapes_for_short_and_long_segments():
    for seconds in (0.5, 1.0, 10.0):
        s = sound(humming(1, seconds=seconds))
        out = segment_blocks(s, 0, s.n_frames, BLOCKS)
        assert out["fine"].shape == out["lines"].shape == (4096 // 2 + 1,)
        assert out["timing"].shape == (6 * (len(MODULATION_EDGES_HZ) - 1),)
        assert out["pmean"].shape == (PARAMS.n_mels,) and out["level"].shape == (1,)
        assert all(np.isfinite(v).all() for v in out.values()), seconds


def test_a_log_mel_alone_gives_the_mel_blocks_only():
    s = sound(humming(2))
    picture = Sound(s.log_mel, SR, PARAMS.hop_length)
    assert set(segment_blocks(picture, 0, picture.n_frames, BLOCKS)) == {"pmean", "dbmean", "dbstd", "dbmax", "level"}
    with pytest.raises(ValueError, match="needs the recordings"):
        Reference(Recipe(("pmean", "lines")), sr=SR, hop_length=PARAMS.hop_length).fit([picture, picture, picture])


@pytest.mark.parametrize("n, d", [(10, 600), (12, 128), (40, 30)])
def test_ledoit_wolf_distance_is_sklearns_in_both_forms(n, d):
    """The low-rank (Woodbury) form used when there are fewer clips than dimensions gives sklearn's dense
    Ledoit-Wolf precision's distances."""
    rng = np.random.default_rng(d)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, d)
    dist = BlockDistance("mahalanobis").fit(X)
    assert bool(dist.lowrank_.size) == (n <= d)
    Y = rng.normal(size=(6, d)) * 2.0
    Z = (X - dist.mean_) / dist.scale_
    precision = LedoitWolf(assume_centered=True).fit(Z).get_precision()
    Zy = (Y - dist.mean_) / dist.scale_
    expected = np.sqrt(np.einsum("ij,jk,ik->i", Zy, precision, Zy) / d)
    np.testing.assert_allclose(dist.score(Y), expected, rtol=1e-6)


def test_a_recording_and_its_picture_through_an_adapted_detector(tiny_detector, tmp_path):
    """A lines recipe adapted from files catches the line in a recording; a spectrogram picture of the same
    recording is still scored (mel blocks only) and the answer says what it could not hear."""
    files = []
    for i in range(8):
        files.append(tmp_path / f"normal_{i}.wav")
        sf.write(files[-1], humming(i), SR, subtype="FLOAT")
    fault = tmp_path / "fault.wav"
    sf.write(fault, humming(300, tone=0.02), SR, subtype="FLOAT")
    recipe = Recipe(("pmean", "lines"), "mahalanobis", "max")
    cal = tiny_detector.calibrate(files[:6], recipe=recipe)
    adapted = tiny_detector.with_calibration(cal)
    normal_scores = [a.score for a in adapted.analyze_many(files[6:])]
    analysis = adapted.analyze(fault, explain=True)
    assert analysis.score > max(normal_scores) and analysis.label != "NORMAL"
    from_picture = adapted.analyze_log_mel(analysis.log_mel, name="fault.png")
    assert np.isfinite(from_picture.score)
    assert any("spectrogram picture alone" in note for note in from_picture.notes)
    assert not any("spectrogram picture alone" in note for note in analysis.notes)
    # The sound kept with an explained analysis scores the same again (what the page does on a change).
    assert adapted.analyze_sound(analysis.sound, name="again").score == pytest.approx(analysis.score)
