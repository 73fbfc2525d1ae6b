"""Deterministic synthetic gearbox recordings in DCASE Task 2 layout, built from gearbox physics.

The model of the signal
-----------------------
A DC motor turns the input shaft at the rotation frequency ``f_r`` (about 20 Hz per volt, a little slower
under load). A pinion with ``teeth`` teeth on that shaft drives a gear with ``gear_teeth`` teeth on the
output shaft, so the output shaft turns at ``f_out = f_r * teeth / gear_teeth`` (a few Hz) and the teeth
mesh at ``f_m = teeth * f_r``. One clip is the sum of

* **gear mesh**: harmonics of ``f_m`` whose upper harmonics grow with the load, phase- and
  amplitude-modulated once per input-shaft revolution (run-out), which puts sidebands at ``f_m +/- k f_r``,
  and once per output-shaft revolution (eccentric gear, uneven load), which gives the vertical striations
  a spectrogram of a real gearbox shows;
* **shaft lines**: small residual 1x, 2x and 3x ``f_r`` from imperfect balance;
* **motor hum**: ripple of the rectified mains at 100 Hz (2 x 50 Hz) and its harmonics;
* **mechanical broadband noise** (friction, rattle) with a falling spectral slope and a high-frequency
  roll-off, amplitude-modulated once per output-shaft revolution like the mesh;
* a short **room response**: a direct path plus exponentially decaying, low-passed noise (fftconvolve);
* **factory background**, different per domain: coloured noise, distant clanks, and in the target domain
  another machine (a fan) humming nearby.

The speed wobbles slowly within a clip (a few tenths of a percent), so lines are not perfectly pure.
Normal clips are scaled to an RMS of 0.021 +/- 3 % (about -33.6 dBFS), the level of real DCASE 2023
gearbox clips.

Domains: the ``source`` domain runs at 1.0 to 1.3 V with loads of 0 to 100 (the ``wt`` attribute) in a
small, dry workshop; the ``target`` domain runs faster (1.5 to 1.8 V) under heavier loads (120 to 210) in a
larger hall with brighter, louder background noise and a fan running nearby.

Faults are extra signals added to the machine signal before the room (see ``FAULTS``): ``tooth``,
``wear``, ``bearing``, ``imbalance`` and ``lubrication``, each scaled by a severity in ``[0.3, 1.0]``.
The gain that sets the clip level is computed from the normal part alone, so a fault adds energy.

Randomness: every clip draws from its own ``numpy.random.Generator`` seeded with
``(seed, domain, split, label, index)``, so a clip does not depend on how many others are written, the
same seed gives byte-identical files and there is no global random state. Within a clip, the machine,
the background and the fault draw from separate child generators, so a normal clip and an anomalous clip
built from the same seed and attributes differ only by the fault. The room of a domain is fixed (the
microphone stays put) and drawn from the domain's own constant seed.

How to add a fault kind
-----------------------
1. Write a function ``(t, params, rng, severity) -> np.ndarray``: ``t`` is the time axis in seconds,
   ``params`` the clip's ``GearboxParams`` (use ``params.shaft_phase(t)``, ``params.output_phase(t)`` and
   ``params.mesh_vibration(t)`` to lock the fault to the machine's rotation), ``rng`` a generator for its
   own random choices and ``severity`` a number in ``[0.3, 1.0]``. Return an array shaped like ``t`` in
   machine units: the normal machine signal has an RMS of about 1, so a fault whose energy in its own
   frequency region is a few dB above the machine's there at ``severity=0.3`` is subtle but detectable.
2. Register it: ``FAULTS["my_fault"] = my_fault`` (or add it to the dictionary below). Names must not
   contain ``_`` because they end up in file names (``..._fault_my-fault.wav`` is fine).
3. Nothing else: ``write_corpus`` cycles through ``FAULTS`` in order, so the new kind appears in test
   sets evenly, and ``generate_examples`` writes ``fault_<name>.wav``.
4. Add a case to ``tests/test_synth.py`` if the fault has a signature you can check (a line, a
   modulation rate) besides the generic log-mel test, which covers every registered kind.

Examples
--------
>>> wave, attributes = synthesize_clip("source", "anomaly", 7, fault="tooth", severity=0.5, volt=1.2, wt=50)
>>> wave.shape, wave.dtype, attributes
((160000,), dtype('float32'), {'volt': 1.2, 'wt': 50, 'fault': 'tooth'})
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft
from scipy import signal

from anomaly.dcase import format_name, list_audio

log = logging.getLogger("anomaly")

SAMPLE_RATE = 16000
DURATION_S = 10.0
TARGET_RMS = 0.021
SEVERITY_RANGE = (0.3, 1.0)
EXAMPLE_SEVERITY = 0.9
# The milder example, examples/fault_tooth_mild.wav. With the bundled model it scores 1.41, inside NEEDS
# MAINTENANCE (1.27 to 1.50), and 1.37 to 1.42 as FLAC, MP3, Ogg, M4A, WebM or upsampled WAV. Picked from
# every fault kind at severities 0.10 to 0.70 as the clip whose worst case over those uploads lies furthest
# from either threshold; a retrained model needs a new pick.
MILD_EXAMPLE_FAULT = "tooth"
MILD_EXAMPLE_SEVERITY = 0.33
MAINS_HZ = 50.0
HZ_PER_VOLT = 20.0  # input-shaft speed per motor volt, unloaded
FULL_LOAD_WT = 250.0  # the load weight that counts as full load
PINION_TEETH = 15  # on the input shaft: mesh frequency = 15 x f_r
GEAR_TEETH = 112  # on the output shaft: a non-integer ratio, so every pinion tooth meets every gear tooth

_DOMAIN_IDS = {"source": 0, "target": 1}
_SPLIT_IDS = {"train": 0, "test": 1}
_LABEL_IDS = {"normal": 0, "anomaly": 1}


@dataclass(frozen=True)
class DomainSpec:
    """Operating conditions and acoustic surroundings of one domain.

    Attributes
    ----------
    volts, weights : tuple
        Motor voltages and load weights a clip's ``volt`` and ``wt`` attributes are drawn from.
    rt60_s : float
        Reverberation time of the room (seconds).
    background_db : float
        Level of the background noise relative to the machine signal (dB).
    background_slope_db : float
        Spectral slope of the background noise (dB per octave of power per Hz).
    hiss_db : float
        Level of a high-frequency hiss (air, ventilation) relative to the machine signal (dB).
    clank_rate_hz : float
        Mean rate of distant clanks (per second).
    clank_modes_hz : tuple of float
        Resonances of whatever clanks nearby (the same objects in every clip of the domain).
    room_seed : int
        Seed of the room's impulse response: the microphone stays put, so the room is the same in every
        clip of a domain.
    fan_db : float | None
        Level of a fan humming nearby relative to the machine signal, or None for no fan.
    """

    volts: tuple[float, ...]
    weights: tuple[int, ...]
    rt60_s: float
    background_db: float
    background_slope_db: float
    hiss_db: float
    clank_rate_hz: float
    clank_modes_hz: tuple[float, ...]
    room_seed: int
    fan_db: float | None


DOMAINS: dict[str, DomainSpec] = {
    "source": DomainSpec(
        volts=(1.0, 1.1, 1.2, 1.3),
        weights=(0, 30, 50, 80, 100),
        rt60_s=0.25,
        background_db=-14.0,
        background_slope_db=-6.0,
        hiss_db=-40.0,
        clank_rate_hz=0.15,
        clank_modes_hz=(340.0, 780.0, 1450.0),
        room_seed=2023_0,
        fan_db=None,
    ),
    "target": DomainSpec(
        volts=(1.5, 1.6, 1.7, 1.8),
        weights=(120, 150, 180, 210),
        rt60_s=0.5,
        background_db=-11.0,
        background_slope_db=-3.0,
        hiss_db=-27.0,
        clank_rate_hz=0.3,
        clank_modes_hz=(260.0, 610.0, 1120.0),
        room_seed=2023_1,
        fan_db=-16.0,
    ),
}


@dataclass(frozen=True)
class GearboxParams:
    """Physical parameters of one clip's gearbox; fault functions read them to lock onto the rotation.

    Attributes
    ----------
    volt : float
        Motor voltage (the ``volt`` attribute); sets the speed.
    wt : int
        Load weight (the ``wt`` attribute).
    f_r : float
        Mean rotation frequency of the input (motor) shaft in Hz: ``20 Hz * volt`` minus the slip under load.
    teeth : int
        Teeth of the pinion on the input shaft; the mesh frequency is ``teeth * f_r``.
    gear_teeth : int
        Teeth of the driven gear on the output shaft.
    load : float
        Load normalised to 0..1 (``wt / 250``); raises the upper mesh harmonics and the noise.
    wobble : tuple of (relative amplitude, frequency in Hz, phase in rad)
        Slow sinusoidal speed variations: the speed is ``f_r * (1 + sum(a * sin(2 pi nu t + phi)))``.
    shaft_phase0 : float
        Angle of the input shaft at ``t = 0`` (rad).
    mesh_amplitudes, mesh_phases : tuple of float
        Amplitude and phase of the mesh harmonics 1, 2, ... in machine units.
    runout_am, runout_pm : float
        Depth of the once-per-revolution amplitude modulation and phase modulation (rad) of the mesh.
    output_am : float
        Depth of the once-per-output-revolution modulation (rotational striations).
    sr : int
        Sample rate in Hz.
    duration_s : float
        Clip length in seconds.
    """

    volt: float
    wt: int
    f_r: float
    teeth: int
    gear_teeth: int
    load: float
    wobble: tuple[tuple[float, float, float], ...]
    shaft_phase0: float
    mesh_amplitudes: tuple[float, ...]
    mesh_phases: tuple[float, ...]
    runout_am: float
    runout_pm: float
    output_am: float
    sr: int = SAMPLE_RATE
    duration_s: float = DURATION_S

    @property
    def f_mesh(self) -> float:
        """Mean gear mesh frequency in Hz."""
        return self.teeth * self.f_r

    @property
    def f_out(self) -> float:
        """Mean rotation frequency of the output shaft in Hz."""
        return self.f_r * self.teeth / self.gear_teeth

    def time_axis(self) -> np.ndarray:
        """Sample times in seconds."""
        return np.arange(int(round(self.sr * self.duration_s))) / self.sr

    def shaft_phase(self, t: np.ndarray) -> np.ndarray:
        """Unwrapped angle of the input shaft in radians at times ``t``, including the speed wobble."""
        theta = 2 * np.pi * self.f_r * t + self.shaft_phase0
        for amplitude, nu, phi in self.wobble:
            theta = theta + (self.f_r * amplitude / nu) * (
                np.cos(phi) - np.cos((2 * np.pi * nu * t + phi).astype(np.float32))
            )
        return theta

    def output_phase(self, t: np.ndarray) -> np.ndarray:
        """Unwrapped angle of the output shaft in radians at times ``t``."""
        return self.shaft_phase(t) * self.teeth / self.gear_teeth

    def mesh_vibration(self, t: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """Gear mesh vibration (all harmonics, with run-out phase modulation) before amplitude modulation.

        Parameters
        ----------
        t : np.ndarray
            Times in seconds.
        theta : np.ndarray, optional
            ``shaft_phase(t)`` if already computed.
        """
        theta = self.shaft_phase(t) if theta is None else theta
        mesh = self.teeth * theta + self.runout_pm * fast_cos(theta + 0.7)
        return harmonic_series(mesh, self.mesh_amplitudes, self.mesh_phases)


#: A fault: ``(t, params, rng, severity) -> signal`` added to the machine signal (see the module docstring).
FaultFn = Callable[[np.ndarray, GearboxParams, np.random.Generator, float], np.ndarray]


# ----------------------------------------------------------------------------------------------------------
# Signal building blocks


def slope_gain(
    freqs: np.ndarray,
    slope_db_per_octave: float,
    f_lo: float = 20.0,
    f_hi: float | None = None,
    order: int = 2,
    f_highpass: float | None = None,
) -> np.ndarray:
    """Amplitude response whose power per Hz falls by ``slope_db_per_octave`` per octave above ``f_lo``.

    Below ``f_lo`` the response is flat (no huge DC component); above ``f_hi``, if given, it rolls off like a
    Butterworth low-pass of the given ``order``; below ``f_highpass``, if given, like a first-order high-pass.
    """
    gain = (np.maximum(freqs, f_lo) / f_lo) ** (slope_db_per_octave / (20 * np.log10(2)))
    if f_hi is not None:
        gain = gain / np.sqrt(1 + (freqs / f_hi) ** (2 * order))
    if f_highpass is not None:
        gain = gain / np.sqrt(1 + (f_highpass / np.maximum(freqs, 1e-3)) ** 2)
    return gain


def band_gain(freqs: np.ndarray, f_lo: float, f_hi: float, order: int = 4) -> np.ndarray:
    """Amplitude response of a Butterworth-like band-pass from ``f_lo`` to ``f_hi`` Hz."""
    f = np.maximum(freqs, 1e-3)
    return 1 / np.sqrt((1 + (f_lo / f) ** (2 * order)) * (1 + (f / f_hi) ** (2 * order)))


def shaped_noise(
    rng: np.random.Generator, n_samples: int, sr: int, gains: list[tuple[float, np.ndarray]]
) -> np.ndarray:
    """Gaussian noise that is the sum of independent components with given RMS and amplitude responses.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness.
    n_samples, sr : int
        Length and sample rate.
    gains : list of (rms, response)
        Each component's RMS and its amplitude response sampled at ``scipy.fft.rfftfreq(n_samples, 1/sr)``.
        Independent noises add in power, so one inverse FFT synthesises all of them at once.
    """
    power = np.zeros(n_samples // 2 + 1)
    total = 0.0
    for rms, response in gains:
        power += rms**2 * response**2 / np.mean(response**2)
        total += rms**2
    power[0] = 0.0
    n_bins = len(power)
    spectrum = rng.standard_normal(n_bins, dtype=np.float32) + 1j * rng.standard_normal(
        n_bins, dtype=np.float32
    )
    noise = sp_fft.irfft(spectrum * np.sqrt(power).astype(np.float32), n_samples).astype(np.float64)
    return noise * (np.sqrt(total) / (_rms(noise) + 1e-30))


@functools.lru_cache(maxsize=64)
def _response(kind: str, n_samples: int, sr: int, *args: float) -> np.ndarray:
    """``slope_gain`` or ``band_gain`` on the real-FFT grid, cached: clips share a handful of responses."""
    freqs = sp_fft.rfftfreq(n_samples, 1 / sr)
    response = slope_gain(freqs, *args) if kind == "slope" else band_gain(freqs, *args)
    response.flags.writeable = False
    return response


def coloured_noise(
    rng: np.random.Generator,
    n_samples: int,
    sr: int,
    slope_db_per_octave: float,
    f_lo: float = 20.0,
    f_hi: float | None = None,
    order: int = 2,
    f_highpass: float | None = None,
) -> np.ndarray:
    """Unit-RMS Gaussian noise with a spectral slope (see ``slope_gain``), e.g. -3 dB/octave for pink."""
    response = _response("slope", n_samples, sr, slope_db_per_octave, f_lo, f_hi, order, f_highpass)
    return shaped_noise(rng, n_samples, sr, [(1.0, response)])


def band_noise(rng: np.random.Generator, n_samples: int, sr: int, f_lo: float, f_hi: float) -> np.ndarray:
    """Unit-RMS Gaussian noise band-limited to ``[f_lo, f_hi]`` Hz with soft (4th-order) edges."""
    return shaped_noise(rng, n_samples, sr, [(1.0, _response("band", n_samples, sr, f_lo, f_hi))])


def ringing(
    times_s: np.ndarray, amplitudes: np.ndarray, n_samples: int, sr: int, f_hz: float, decay_s: float
) -> np.ndarray:
    """Impulses at ``times_s`` that each ring a resonance at ``f_hz`` decaying with time constant ``decay_s``.

    The impulses are placed with linear interpolation between samples, so their timing is not quantised.
    The resonance is a two-pole filter normalised to unit peak response.
    """
    pulses = np.zeros(n_samples)
    position = np.asarray(times_s) * sr
    keep = (position >= 0) & (position < n_samples - 1)
    position, amplitudes = position[keep], np.asarray(amplitudes, dtype=float)[keep]
    index = np.floor(position).astype(int)
    frac = position - index
    np.add.at(pulses, index, amplitudes * (1 - frac))
    np.add.at(pulses, index + 1, amplitudes * frac)
    r = np.exp(-1.0 / (decay_s * sr))
    w = 2 * np.pi * f_hz / sr
    return signal.lfilter([np.sin(w)], [1.0, -2 * r * np.cos(w), r * r], pulses)


def revolution_times(
    t: np.ndarray, phase: np.ndarray, angle: float, per_revolution: float = 1.0
) -> np.ndarray:
    """Times at which ``phase`` (unwrapped, rad) passes ``angle + 2 pi n / per_revolution``."""
    step = 2 * np.pi / per_revolution
    first = np.ceil((phase[0] - angle) / step)
    last = np.floor((phase[-1] - angle) / step)
    crossings = angle + step * np.arange(first, last + 1)
    return np.interp(crossings, phase, t)


def rotation_pulse(phase: np.ndarray, sharpness: float) -> np.ndarray:
    """A once-per-revolution bump of unit mean (a von Mises shape); larger ``sharpness`` is narrower."""
    bump = np.exp(sharpness * (fast_cos(phase) - 1))
    return bump / np.mean(bump)


def harmonic_series(
    phase: np.ndarray, amplitudes: Sequence[float] | np.ndarray, phases: Sequence[float] | np.ndarray
) -> np.ndarray:
    """``sum_k amplitudes[k-1] * cos(k * phase + phases[k-1])`` for k = 1, 2, ..., computed fast.

    The harmonics come from powers of ``exp(i phase)`` in single precision after reducing the phase
    modulo 2 pi (accurate to about 1e-6, far below 16-bit quantisation), which is several times faster than
    one ``np.cos`` per harmonic on large arguments.
    """
    reduced = _reduce_phase(phase)
    z = (np.cos(reduced) + 1j * np.sin(reduced)).astype(np.complex64)
    power = z.copy()
    out = np.zeros(len(reduced), dtype=np.float32)
    for k, (amplitude, offset) in enumerate(zip(amplitudes, phases, strict=True)):
        if k:
            power *= z
        if amplitude:
            out += np.float32(amplitude * np.cos(offset)) * power.real
            out -= np.float32(amplitude * np.sin(offset)) * power.imag
    return out.astype(np.float64)


def fast_cos(phase: np.ndarray) -> np.ndarray:
    """``np.cos(phase)`` in single precision after reducing the phase; for large unwrapped phases."""
    return np.cos(_reduce_phase(phase)).astype(np.float64)


def _reduce_phase(phase: np.ndarray) -> np.ndarray:
    """``phase`` modulo 2 pi into [-pi, pi] as float32 (faster than ``np.remainder``)."""
    cycles = phase * (1 / (2 * np.pi))
    cycles -= np.rint(cycles)
    return (cycles * (2 * np.pi)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


# ----------------------------------------------------------------------------------------------------------
# The machine, its room and its surroundings


def rotation_frequency(volt: float, wt: float) -> float:
    """Nominal input-shaft rotation frequency in Hz: ``20 Hz * volt``, slipping 2 % plus up to 6 % with load.

    Examples
    --------
    >>> round(rotation_frequency(1.0, 0), 2), round(rotation_frequency(1.0, 125), 2)
    (19.6, 19.0)
    """
    slip = 0.02 + 0.06 * wt / FULL_LOAD_WT
    return HZ_PER_VOLT * volt * (1 - slip)


def gearbox_params(
    volt: float,
    wt: int,
    rng: np.random.Generator,
    sr: int = SAMPLE_RATE,
    duration_s: float = DURATION_S,
) -> GearboxParams:
    """Draw the parameters of a clip's gearbox at the given operating point.

    The gearbox itself (teeth, harmonic pattern) is the same machine in every clip; only the speed wobble,
    the phases and small unit-to-unit spreads vary from clip to clip.
    """
    load = wt / FULL_LOAD_WT
    f_r = rotation_frequency(volt, wt) * (1 + 0.003 * rng.standard_normal())
    wobble = tuple(
        (float(a), float(nu), float(phi))
        for a, nu, phi in zip(
            rng.uniform(0.0005, 0.002, 3),
            rng.uniform(0.07, 0.6, 3),
            rng.uniform(0, 2 * np.pi, 3),
            strict=True,
        )
    )
    teeth, gear_teeth = PINION_TEETH, GEAR_TEETH
    n_harmonics = max(1, min(8, int(0.42 * sr / (teeth * f_r))))
    k = np.arange(1, n_harmonics + 1)
    # Unloaded mesh harmonics fall with order; load raises the upper ones most (tooth deflection).
    base = 0.3 * k**-1.1 * (1 + load * (0.3 + 0.35 * k))
    spread = 10 ** (rng.normal(0, 0.5, n_harmonics) / 20)
    return GearboxParams(
        volt=float(volt),
        wt=int(wt),
        f_r=float(f_r),
        teeth=teeth,
        gear_teeth=gear_teeth,
        load=float(load),
        wobble=wobble,
        shaft_phase0=float(rng.uniform(0, 2 * np.pi)),
        mesh_amplitudes=tuple(float(a) for a in base * spread),
        mesh_phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, n_harmonics)),
        runout_am=float(rng.uniform(0.08, 0.15)),
        runout_pm=float(rng.uniform(0.05, 0.12)),
        output_am=float(rng.uniform(0.2, 0.32)),
        sr=sr,
        duration_s=duration_s,
    )


def machine_signal(t: np.ndarray, params: GearboxParams, rng: np.random.Generator) -> np.ndarray:
    """The healthy gearbox and motor as heard at the casing, in machine units (RMS about 1)."""
    n, sr = len(t), params.sr
    theta = params.shaft_phase(t)
    theta_out = theta * params.teeth / params.gear_teeth
    out_phase0 = rng.uniform(0, 2 * np.pi)
    # Output-shaft striations: uneven load per output revolution modulates mesh and friction alike.
    striation = (1 - params.output_am) + params.output_am * rotation_pulse(
        theta_out + out_phase0, rng.uniform(1.5, 3.0)
    )
    runout = 1 + params.runout_am * fast_cos(theta + 1.3)
    mesh = params.mesh_vibration(t, theta) * runout * striation

    shaft = harmonic_series(theta, rng.uniform(0.03, 0.06, 3), rng.uniform(0, 2 * np.pi, 3))
    mains = MAINS_HZ * (1 + 0.0005 * rng.standard_normal())
    hum_levels = 0.12 * np.array([1.0, 0.45, 0.35, 0.2, 0.12, 0.08]) * 10 ** (rng.normal(0, 1.0, 6) / 20)
    hum = harmonic_series(2 * np.pi * 2 * mains * t, hum_levels, rng.uniform(0, 2 * np.pi, 6))
    friction = coloured_noise(rng, n, sr, -3.5, f_lo=100.0, f_hi=4500.0, order=2, f_highpass=35.0)
    friction *= (1.0 + 0.25 * params.load) * striation
    return mesh + shaft + hum + friction


@functools.lru_cache(maxsize=8)
def room_response(domain: str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Impulse response of a domain's room: a direct path, one early reflection and a darkening tail."""
    spec = DOMAINS[domain]
    rng = np.random.default_rng(spec.room_seed)
    rt60_s = spec.rt60_s
    n = int(sr * min(rt60_s, 0.6))
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)
    # Walls and air absorb highs: the tail darkens as it decays.
    sos = signal.butter(1, 3000.0, fs=sr, output="sos")
    tail = signal.sosfilt(sos, tail)
    ir = 0.3 * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    delay = int(rng.integers(int(0.002 * sr), int(0.006 * sr)))
    ir[0] = 1.0
    ir[delay] += 0.35 * rng.choice([-1.0, 1.0])
    ir.flags.writeable = False
    return ir


def background(
    t: np.ndarray, spec: DomainSpec, rng: np.random.Generator, sr: int, machine_rms: float
) -> np.ndarray:
    """Factory background for a domain, scaled relative to the machine's RMS."""
    n = len(t)
    level = machine_rms * 10 ** (rng.normal(0, 0.5) / 20)
    out = shaped_noise(
        rng,
        n,
        sr,
        [
            (
                level * 10 ** (spec.background_db / 20),
                _response("slope", n, sr, spec.background_slope_db, 100.0, 6000.0),
            ),
            (level * 10 ** (spec.hiss_db / 20), _response("band", n, sr, 2500.0, 7800.0)),
        ],
    )
    # Distant clanks: damped low-mid resonances at random times (highs absorbed on the way).
    n_clanks = rng.poisson(spec.clank_rate_hz * n / sr)
    if n_clanks:
        times = rng.uniform(0, n / sr, n_clanks)
        amplitudes = level * 10 ** (rng.uniform(-20, -10, n_clanks) / 20) * rng.choice([-1.0, 1.0], n_clanks)
        for f_hz in spec.clank_modes_hz:
            out += ringing(times, amplitudes, n, sr, f_hz * rng.uniform(0.97, 1.03), rng.uniform(0.02, 0.08))
    if spec.fan_db is not None:
        f_fan = 24.6 * (1 + 0.004 * rng.standard_normal())
        blades = 7
        amplitudes = np.zeros(3 * blades)
        amplitudes[[0, 1, blades - 1, 2 * blades - 1, 3 * blades - 1]] = (0.5, 0.3, 1.0, 0.5, 0.25)
        fan = harmonic_series(2 * np.pi * f_fan * t, amplitudes, rng.uniform(0, 2 * np.pi, 3 * blades))
        fan += 0.4 * band_noise(rng, n, sr, 80.0, 1200.0) * (1 + 0.3 * fast_cos(2 * np.pi * f_fan * t))
        out += level * 10 ** (spec.fan_db / 20) * fan / _rms(fan)
    return out


# ----------------------------------------------------------------------------------------------------------
# Faults: (t, params, rng, severity) -> additive signal in machine units


def fault_tooth(
    t: np.ndarray, params: GearboxParams, rng: np.random.Generator, severity: float
) -> np.ndarray:
    """Chipped pinion tooth: once per input revolution an impact rings a structural resonance (1-5 kHz).

    The damaged tooth also meshes differently for a short while each revolution, which spreads the mesh
    harmonics into a wider sideband family at ``f_m +/- k f_r``.
    """
    n, sr = len(t), params.sr
    theta = params.shaft_phase(t)
    times = revolution_times(t, theta, rng.uniform(0, 2 * np.pi))
    amplitudes = severity * 2.5 * (1 + 0.15 * rng.standard_normal(len(times)))
    impacts = sum(
        weight * ringing(times, amplitudes, n, sr, f_hz, rng.uniform(0.003, 0.008))
        for weight, f_hz in ((1.0, rng.uniform(1500, 4500)), (0.5, rng.uniform(1000, 5000)))
    )
    # The chipped tooth is in mesh for 1/teeth of a revolution: a narrow dip in the mesh force.
    dip = rotation_pulse(theta - rng.uniform(0, 2 * np.pi), 2.0 * params.teeth)
    dip = dip / dip.max()
    sidebands = -0.6 * severity * dip * params.mesh_vibration(t, theta)
    return impacts + sidebands


def fault_wear(t: np.ndarray, params: GearboxParams, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Distributed tooth wear: a raised family of sidebands around the mesh harmonics and a higher floor."""
    n, sr = len(t), params.sr
    theta = params.shaft_phase(t)
    modulation = harmonic_series(theta, 0.9 / np.arange(1, 5), rng.uniform(0, 2 * np.pi, 4))
    sidebands = 0.9 * severity * modulation * params.mesh_vibration(t, theta)
    # Worn profiles add mesh harmonics of higher order and rough-surface noise around the mesh band.
    harmonics = harmonic_series(
        params.teeth * theta, severity * np.array([0.0, 0.25, 0.25, 0.25, 0.25]), rng.uniform(0, 2 * np.pi, 5)
    )
    floor = 1.0 * severity * band_noise(rng, n, sr, 0.8 * params.f_mesh, 4000.0)
    return sidebands + harmonics + floor


def fault_bearing(
    t: np.ndarray, params: GearboxParams, rng: np.random.Generator, severity: float
) -> np.ndarray:
    """Outer-race bearing defect: impacts at 3.5-5.5 x f_r (with slip) ringing a high resonance (4-7 kHz)."""
    n, sr = len(t), params.sr
    theta = params.shaft_phase(t)
    ratio = rng.uniform(3.5, 5.5)
    times = revolution_times(t, theta * ratio, 0.0)
    # Rolling elements slip: the impacts wander by about 1 % of their spacing.
    times = times + rng.normal(0, 0.01 / (ratio * params.f_r), len(times))
    amplitudes = severity * 2.0 * (1 + 0.3 * rng.standard_normal(len(times)))
    f_res = rng.uniform(4000, 7000)
    impacts = ringing(times, amplitudes, n, sr, f_res, rng.uniform(0.001, 0.003))
    impacts += 0.5 * ringing(times, amplitudes, n, sr, 0.6 * f_res, 0.002)
    return impacts


def fault_imbalance(
    t: np.ndarray, params: GearboxParams, rng: np.random.Generator, severity: float
) -> np.ndarray:
    """Imbalance or misalignment: strong 1x and 2x f_r, and the whole mesh swinging once per revolution."""
    theta = params.shaft_phase(t)
    lines = harmonic_series(theta, severity * np.array([1.6, 1.4, 0.8]), rng.uniform(0, 2 * np.pi, 3))
    swing = 0.7 * severity * fast_cos(theta + rng.uniform(0, 2 * np.pi)) * params.mesh_vibration(t, theta)
    return lines + swing


def fault_lubrication(
    t: np.ndarray, params: GearboxParams, rng: np.random.Generator, severity: float
) -> np.ndarray:
    """Lubrication loss: high-frequency friction noise pulsing with the mesh, and an intermittent squeal."""
    n, sr = len(t), params.sr
    theta = params.shaft_phase(t)
    friction = band_noise(rng, n, sr, 3000.0, 7800.0)
    friction *= 1 + 0.5 * fast_cos(params.teeth * theta)
    # Stick-slip squeal: a wandering tone that comes and goes over a few seconds.
    f_sq = rng.uniform(2500, 6000) * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t))
    squeal = np.sin(2 * np.pi * np.cumsum(f_sq) / sr)
    episodes = np.clip(np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi)), 0, None)
    return severity * (0.6 * friction + 0.5 * episodes * squeal)


FAULTS: dict[str, FaultFn] = {
    "tooth": fault_tooth,
    "wear": fault_wear,
    "bearing": fault_bearing,
    "imbalance": fault_imbalance,
    "lubrication": fault_lubrication,
}


# ----------------------------------------------------------------------------------------------------------
# Clips, corpora and examples


def synthesize_clip(
    domain: str,
    label: str,
    rng_or_seed: np.random.Generator | int | np.random.SeedSequence,
    fault: str | None = None,
    severity: float | None = None,
    volt: float | None = None,
    wt: int | None = None,
    sr: int = SAMPLE_RATE,
    duration_s: float = DURATION_S,
) -> tuple[np.ndarray, dict[str, object]]:
    """Synthesise one gearbox clip.

    Parameters
    ----------
    domain : {"source", "target"}
        Operating range and surroundings (see ``DOMAINS``).
    label : {"normal", "anomaly"}
        An anomaly adds one fault from ``FAULTS``.
    rng_or_seed : np.random.Generator, int or np.random.SeedSequence
        Source of randomness. With the same seed and attributes, the normal and the anomalous clip share
        everything but the fault.
    fault : str, optional
        Fault kind for an anomaly; drawn from ``FAULTS`` when omitted. Ignored for normal clips.
    severity : float, optional
        Fault amplitude scale; drawn uniformly from ``SEVERITY_RANGE`` when omitted.
    volt, wt : optional
        Operating point; drawn from the domain's sets when omitted (any value is accepted).
    sr : int
        Sample rate in Hz.
    duration_s : float
        Length in seconds.

    Returns
    -------
    waveform : np.ndarray
        float32 samples in [-1, 1], RMS near ``TARGET_RMS`` for a normal clip.
    attributes : dict
        ``{"volt": ..., "wt": ...}`` plus ``"fault"`` for an anomaly, ready for ``anomaly.dcase.format_name``.
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAINS)}")
    if label not in _LABEL_IDS:
        raise ValueError(f"unknown label {label!r}; expected 'normal' or 'anomaly'")
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
    spec = DOMAINS[domain]
    rng = np.random.default_rng(rng_or_seed)
    # Draw every choice whether or not it is overridden, so the streams below do not depend on overrides.
    drawn_volt = float(rng.choice(spec.volts))
    drawn_wt = int(rng.choice(spec.weights))
    drawn_fault = str(rng.choice(list(FAULTS)))
    drawn_severity = float(rng.uniform(*SEVERITY_RANGE))
    level_db = float(rng.uniform(-0.25, 0.25))
    machine_rng, background_rng, fault_rng = rng.spawn(3)

    volt = drawn_volt if volt is None else round(float(volt), 3)
    wt = drawn_wt if wt is None else int(wt)
    params = gearbox_params(volt, wt, machine_rng, sr=sr, duration_s=duration_s)
    t = params.time_axis()
    machine = machine_signal(t, params, machine_rng)
    ir = room_response(domain, sr)
    bg = background(t, spec, background_rng, sr, _rms(machine))

    attributes: dict[str, object] = {"volt": volt, "wt": wt}
    sources = [machine]
    if label == "anomaly":
        kind = drawn_fault if fault is None else fault
        strength = drawn_severity if severity is None else float(severity)
        sources.append(FAULTS[kind](t, params, fault_rng, strength))
        attributes["fault"] = kind
    # Single precision is ample for the room (the result is quantised to 16 bits) and twice as fast.
    heard = signal.fftconvolve(np.stack(sources).astype(np.float32), ir[None, :].astype(np.float32), axes=-1)
    heard = heard[:, : len(t)].astype(np.float64)
    normal = heard[0] + bg
    gain = TARGET_RMS * 10 ** (level_db / 20) / (_rms(normal) + 1e-12)
    wave = gain * heard.sum(axis=0) + gain * bg
    peak = np.max(np.abs(wave))
    if peak > 0.99:  # a very strong fault must not clip; keep its shape, lose some level
        wave *= 0.99 / peak
    return wave.astype(np.float32), attributes


def clip_rng(seed: int, domain: str, split: str, label: str, index: int) -> np.random.Generator:
    """The generator of one corpus clip, independent of how many other clips are generated."""
    key = [int(seed), _DOMAIN_IDS[domain], _SPLIT_IDS[split], _LABEL_IDS[label], int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def write_clip(path: str | Path, waveform: np.ndarray, sr: int = SAMPLE_RATE) -> Path:
    """Write a mono 16-bit PCM WAV file."""
    path = Path(path)
    sf.write(path, waveform, sr, subtype="PCM_16", format="WAV")
    return path


def n_target_train(n_train: int) -> int:
    """Number of target-domain training normals that go with ``n_train`` source ones."""
    return 0 if n_train <= 0 else max(3, round(n_train / 100))


def corpus_plan(n_train: int, n_test: int) -> list[tuple[str, str, str, int]]:
    """The clips of a corpus as ``(domain, split, label, index)`` in writing order."""
    plan = [("source", "train", "normal", i) for i in range(n_train)]
    plan += [("target", "train", "normal", i) for i in range(n_target_train(n_train))]
    for domain in ("source", "target"):
        for label in ("normal", "anomaly"):
            plan += [(domain, "test", label, i) for i in range(n_test)]
    return plan


def write_corpus(out_dir: str | Path, seed: int = 0, n_train: int = 100, n_test: int = 20) -> list[Path]:
    """Write a synthetic gearbox corpus in DCASE layout.

    ``out_dir/train`` gets ``n_train`` source-domain normals and ``max(3, round(n_train / 100))``
    target-domain normals (no folder at all when ``n_train`` is 0); ``out_dir/test`` gets ``n_test``
    normal and ``n_test`` anomalous clips per domain. Anomalies cycle through ``FAULTS`` so that every kind
    appears evenly. The same seed gives byte-identical files.

    Returns
    -------
    list of Path
        The files written, in writing order.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must not be negative")
    out_dir = Path(out_dir)
    plan = corpus_plan(n_train, n_test)
    kinds = list(FAULTS)
    for split in sorted({split for _, split, _, _ in plan}):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    log.info("synth: writing %d clips to %s (seed %d)", len(plan), out_dir, seed)
    paths: list[Path] = []
    step = max(1, -(-len(plan) // 10))
    for done, (domain, split, label, index) in enumerate(plan, 1):
        fault = kinds[index % len(kinds)] if label == "anomaly" else None
        wave, attributes = synthesize_clip(
            domain, label, clip_rng(seed, domain, split, label, index), fault=fault
        )
        name = format_name(domain, split, label, index, attributes)
        paths.append(write_clip(out_dir / split / name, wave))
        if done % step == 0 and done < len(plan):
            log.info("synth: %d/%d clips (%d%%)", done, len(plan), round(100 * done / len(plan)))
    counts = {split: sum(1 for _, s, _, _ in plan if s == split) for split in ("train", "test")}
    written = set(paths)
    stale = [p for split in counts if counts[split] for p in list_audio(out_dir / split) if p not in written]
    if stale:
        # Leftovers of an earlier run would silently join the corpus; deleting files is the user's call.
        log.warning(
            "synth: %d other audio files were already in %s and are left in place", len(stale), out_dir
        )
    log.info("synth: wrote %d train and %d test clips to %s", counts["train"], counts["test"], out_dir)
    return paths


def generate_examples(out_dir: str | Path, seed: int = 0) -> list[Path]:
    """Write the bundled example clips: two normals, one clearly audible clip per fault kind and a mild one.

    Files: ``normal_source.wav``, ``normal_target.wav``, ``fault_<kind>.wav`` for every kind in ``FAULTS``
    (severity ``EXAMPLE_SEVERITY``) and ``fault_<MILD_EXAMPLE_FAULT>_mild.wav`` (severity
    ``MILD_EXAMPLE_SEVERITY``, a NEEDS MAINTENANCE example for the bundled model). All run in the source
    room at the operating point of ``normal_source.wav``. The mild one is that very clip's machine and
    background plus the fault, so the difference you hear or see against it is the fault alone; the
    ``fault_<kind>.wav`` clips share its seed sequence object, which every clip advances, so each of them
    has machine details and background of its own. The same seed gives the same bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    volt, wt = DOMAINS["source"].volts[2], DOMAINS["source"].weights[2]

    def example_seeds() -> list[np.random.SeedSequence]:
        return np.random.SeedSequence([int(seed), 99]).spawn(2)

    seeds = example_seeds()
    paths = [
        write_clip(
            out_dir / "normal_source.wav", synthesize_clip("source", "normal", seeds[0], volt=volt, wt=wt)[0]
        ),
        write_clip(out_dir / "normal_target.wav", synthesize_clip("target", "normal", seeds[1])[0]),
    ]
    for kind in FAULTS:
        wave, _ = synthesize_clip(
            "source", "anomaly", seeds[0], fault=kind, severity=EXAMPLE_SEVERITY, volt=volt, wt=wt
        )
        paths.append(write_clip(out_dir / f"fault_{kind}.wav", wave))
    # A fresh copy of normal_source's sequence (synthesize_clip spawns from the one it is given, which is
    # why the clips above differ in more than their fault; they stay as they are, the bundled bytes).
    wave, _ = synthesize_clip(
        "source",
        "anomaly",
        example_seeds()[0],
        fault=MILD_EXAMPLE_FAULT,
        severity=MILD_EXAMPLE_SEVERITY,
        volt=volt,
        wt=wt,
    )
    paths.append(write_clip(out_dir / f"fault_{MILD_EXAMPLE_FAULT}_mild.wav", wave))
    log.info("synth: wrote %d example clips to %s", len(paths), out_dir)
    return paths
