"""Compare synthetic gearbox clips with real recordings: log-mel spectrograms side by side and a table.

Usage::

    python scripts/compare_real.py --real /path/to/dcase2023-gearbox --out /tmp/real_vs_synth.png
    python scripts/compare_real.py --synthetic-only --out docs/synthetic_spectrograms.png

With ``--real``, each real clip is drawn next to a synthetic normal clip at the same domain, voltage and
load (read from the DCASE file name), and a table of RMS level and spectral slope is printed for both.
Real recordings may be licensed for non-commercial use only: write their pictures to a scratch folder,
never into the repository. With ``--synthetic-only``, a normal clip of each domain and one clip per fault
kind are drawn (nothing real is read).

The spectral slope is a least-squares line through the long-term average spectrum (Welch, power per Hz)
averaged in third-octave bands from 50 Hz to 7 kHz, in dB per octave.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import librosa  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import signal  # noqa: E402

from anomaly.dcase import list_audio, parse_name  # noqa: E402
from anomaly.synth import DOMAINS, FAULTS, SAMPLE_RATE, synthesize_clip  # noqa: E402

N_FFT, HOP_LENGTH, N_MELS = 1024, 512, 128
DB_RANGE = (-50.0, 5.0)


def log_mel(waveform: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel power spectrogram in dB (10 log10, no top_db), DCASE baseline settings."""
    mel = librosa.feature.melspectrogram(
        y=waveform.astype(np.float32), sr=sr, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, power=2.0
    )
    return 10 * np.log10(mel + 1e-10)


def rms(waveform: np.ndarray) -> float:
    """Root mean square level."""
    return float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))))


def spectral_slope_db_per_octave(
    waveform: np.ndarray, sr: int = SAMPLE_RATE, f_lo: float = 50.0, f_hi: float = 7000.0
) -> float:
    """Slope of a line fitted to the third-octave averaged long-term spectrum, in dB per octave."""
    freqs, psd = signal.welch(waveform.astype(np.float64), sr, nperseg=4096)
    edges = 2.0 ** np.arange(np.log2(f_lo), np.log2(f_hi), 1 / 3)
    centres, levels = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        band = (freqs >= lo) & (freqs < hi)
        if band.any():
            centres.append(np.log2(np.sqrt(lo * hi)))
            levels.append(10 * np.log10(psd[band].mean() + 1e-20))
    return float(np.polyfit(centres, levels, 1)[0])


def draw(ax: plt.Axes, waveform: np.ndarray, title: str, sr: int = SAMPLE_RATE) -> None:
    """One log-mel spectrogram panel, low frequencies at the bottom."""
    spec = log_mel(waveform, sr)
    seconds = len(waveform) / sr
    ax.imshow(
        spec,
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=DB_RANGE[0],
        vmax=DB_RANGE[1],
        extent=(0, seconds, 0, N_MELS),
        interpolation="nearest",
    )
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("time (s)", fontsize=7)
    ax.set_ylabel("mel band", fontsize=7)
    ax.tick_params(labelsize=6)


def save_png(fig: plt.Figure, out: Path, dpi: int = 70) -> None:
    """Save a figure as a palette PNG: spectrograms of noise compress badly, 256 colours keep it small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    image.save(out, optimize=True)


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Read a file as mono float."""
    waveform, sr = sf.read(path, dtype="float32", always_2d=True)
    return waveform.mean(axis=1), sr


def compare_with_real(real_dir: Path, out: Path, seed: int) -> list[tuple[str, float, float]]:
    """Draw each real clip next to a synthetic twin; return rows (name, rms, slope)."""
    paths = list_audio(real_dir)
    if not paths:
        raise SystemExit(f"no audio files in {real_dir}")
    fig, axes = plt.subplots(len(paths), 2, figsize=(11, 2.3 * len(paths)), squeeze=False)
    rows = []
    for i, path in enumerate(paths):
        real, sr = read_mono(path)
        if sr != SAMPLE_RATE:
            real = librosa.resample(real, orig_sr=sr, target_sr=SAMPLE_RATE)
        info = parse_name(path)
        domain = info.domain if info.domain in DOMAINS else "source"
        volt = float(info.attributes["volt"]) if "volt" in info.attributes else None
        wt = int(float(info.attributes["wt"])) if "wt" in info.attributes else None
        synthetic, attributes = synthesize_clip(domain, "normal", seed + i, volt=volt, wt=wt)
        twin = f"synthetic {domain} normal volt {attributes['volt']} wt {attributes['wt']}"
        draw(axes[i, 0], real, f"real: {path.name}")
        draw(axes[i, 1], synthetic, twin)
        rows.append((f"real {path.name}", rms(real), spectral_slope_db_per_octave(real)))
        rows.append((twin, rms(synthetic), spectral_slope_db_per_octave(synthetic)))
    fig.tight_layout()
    save_png(fig, out)
    return rows


def draw_synthetic(out: Path, seed: int, severity: float = 0.8) -> list[tuple[str, float, float]]:
    """Draw normal clips of both domains, one clip per fault kind and each fault's band-mean change.

    The faults share seed and operating point with the normal source clip, so the last panel (mean log-mel
    level of the faulty clip minus that of the normal clip, per mel band) shows each fault's signature alone.
    Returns rows (name, rms, slope) for the table.
    """
    volt, wt = DOMAINS["source"].volts[2], DOMAINS["source"].weights[2]
    normal = synthesize_clip("source", "normal", seed, volt=volt, wt=wt)[0]
    clips = [
        ("normal source", f"normal, source domain, volt {volt} wt {wt}", normal),
        ("normal target", "normal, target domain", synthesize_clip("target", "normal", seed + 1)[0]),
    ]
    for kind in FAULTS:
        wave, _ = synthesize_clip("source", "anomaly", seed, fault=kind, severity=severity, volt=volt, wt=wt)
        clips.append(
            (kind, f"fault {kind}, severity {severity}, same machine as the normal source clip", wave)
        )
    n_cols = 2
    n_rows = -(-(len(clips) + 1) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(11, 2.2 * n_rows), squeeze=False)
    for ax, (_, title, wave) in zip(axes.flat, clips, strict=False):
        draw(ax, wave, title)
    ax = axes.flat[len(clips)]
    reference = log_mel(normal).mean(axis=1)
    for kind, _, wave in clips[2:]:
        ax.plot(log_mel(wave).mean(axis=1) - reference, label=kind, lw=1)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_title(f"fault minus normal: mean level per mel band (dB), severity {severity}", fontsize=8)
    ax.set_xlabel("mel band", fontsize=7)
    ax.set_ylabel("dB", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, ncol=3)
    for ax in axes.flat[len(clips) + 1 :]:
        ax.axis("off")
    fig.suptitle(
        f"Synthetic gearbox clips (seed {seed}): log-mel, n_fft 1024, hop 512, 128 mels, dB", fontsize=9
    )
    fig.tight_layout()
    save_png(fig, out)
    names = [name if name.startswith("normal") else f"fault {name} {severity}" for name, _, _ in clips]
    return [
        (name, rms(wave), spectral_slope_db_per_octave(wave))
        for name, (_, _, wave) in zip(names, clips, strict=True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, help="folder of real clips (DCASE names give volt and wt)")
    parser.add_argument("--synthetic-only", action="store_true", help="draw synthetic clips only")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic clips")
    args = parser.parse_args(argv)
    if args.synthetic_only == (args.real is not None):
        parser.error("give exactly one of --real DIR and --synthetic-only")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.real is not None:
        rows = compare_with_real(args.real, args.out, args.seed)
    else:
        rows = draw_synthetic(args.out, args.seed)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'clip':<{width}}  {'RMS':>7}  {'dBFS':>6}  {'slope dB/oct':>12}")
    for name, level, slope in rows:
        print(f"{name:<{width}}  {level:7.4f}  {20 * np.log10(level):6.1f}  {slope:12.2f}")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
