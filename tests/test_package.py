"""The package as it ships: the wheel, installed into a fresh venv, scores a file with its console script;
importing it changes nothing; TensorFlow's start-up notices stay out of the CLI's stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

import anomaly

ROOT = Path(__file__).resolve().parent.parent
# Settings of the calling environment that would point the installed package at another model or code.
FOREIGN_ENV = ("ANOMALY_BUNDLE", "ANOMALY_HUB_REPO", "ANOMALY_HUB_REVISION", "PYTHONPATH", "PYTHONHOME")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    return env | {"HF_HUB_DISABLE_TELEMETRY": "1", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources: setuptools writes build/ and *.egg-info next to what it
    builds, and the checkout must stay as it is."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("anomaly", "artifacts"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    before = sorted(p.name for p in ROOT.iterdir())
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
         str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in ROOT.iterdir()) == before
    (built,) = (work / "dist").glob("gearbox_sound_check-*.whl")
    return built


def test_the_wheel_carries_every_module_the_model_and_ranges(wheel):
    with zipfile.ZipFile(wheel) as zf:
        shipped = set(zf.namelist())
        meta = zf.read(f"gearbox_sound_check-{anomaly.__version__}.dist-info/METADATA").decode()
        scripts = zf.read(f"gearbox_sound_check-{anomaly.__version__}.dist-info/entry_points.txt").decode()
    # Every module of the checkout (a package missing from pyproject.toml's list would be left out).
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "anomaly").rglob("*.py")}
    assert modules <= shipped, sorted(modules - shipped)
    model = {f"anomaly/artifacts/{p.name}" for p in (ROOT / "artifacts").iterdir() if p.is_file()}
    assert {"anomaly/artifacts/config.json", "anomaly/artifacts/encoder.keras"} <= model <= shipped
    assert "anomaly/templates/model_card.md" in shipped
    assert not [name for name in shipped if name.startswith(("tests/", "app.py", "artifacts/"))]
    assert "gearbox-sound-check = anomaly.cli:main" in scripts

    requires = [Requirement(line.removeprefix("Requires-Dist: ")) for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = {r.name.lower().replace("_", "-") for r in requires if r.marker is None}
    assert core >= {"numpy", "tensorflow-cpu", "keras", "librosa", "huggingface-hub"}
    assert not core & {"gradio", "pandas", "dask", "pyarrow", "matplotlib"}
    assert not [str(r) for r in requires if any(s.operator == "==" for s in r.specifier)], "exact pins: requirements.txt"
    extras = {line.split(": ")[1] for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert {"app", "archive", "train"} <= extras


def installed_venv(wheel: Path, folder: Path) -> Path:
    """A fresh venv with the wheel installed (no dependencies fetched): the running interpreter's packages
    reach it through a .pth file, so that TensorFlow is not downloaded again. Returns its python."""
    venv.create(folder, with_pip=False)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (Path(purelib) / "outer-packages.pth").write_text("\n".join(ours) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


# Each requirement of the installed distribution (core and every extra) against what is installed.
CHECK_REQUIREMENTS = """
import importlib.metadata as md, json
from packaging.requirements import Requirement
dist = md.distribution("gearbox-sound-check")
out = {"location": str(dist.locate_file("")), "unmet": []}
for text in dist.requires:
    req = Requirement(text)
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version, prereleases=True):
        out["unmet"].append(f"{text} (installed: {version})")
print(json.dumps(out))
"""


@pytest.mark.slow
def test_the_installed_wheel_scores_a_file_with_its_console_script(wheel, tmp_path):
    python = installed_venv(wheel, tmp_path / "venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    checked = subprocess.run(
        [str(python), "-c", CHECK_REQUIREMENTS], cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    found = json.loads(checked.stdout)
    assert Path(found["location"]).is_relative_to(tmp_path / "venv"), found
    assert found["unmet"] == [], "the lock (requirements.txt) is outside the declared ranges"

    script = tmp_path / "venv" / "bin" / "gearbox-sound-check"
    done = subprocess.run(
        [str(script), "predict", str(ROOT / "examples" / "fault_tooth.wav")],
        cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().split("\t")[-1] == "SEVERE ANOMALY", done.stdout
    # The model shipped inside the installed package answered, not the checkout's artifacts/.
    assert f"{tmp_path / 'venv'}" in done.stderr and "anomaly/artifacts/" in done.stderr, done.stderr
    assert str(ROOT / "artifacts") not in done.stderr


def test_importing_the_package_changes_no_environment_variable():
    code = (
        "import os, json; before = dict(os.environ); import anomaly, anomaly.config; "
        "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}


def test_tensorflow_loads_quietly_and_stderr_works_after_it():
    """TensorFlow prints its start-up notices (oneDNN, CPU features) on fd 2 unless told not to; the package
    tells it nothing and holds fd 2 back during the import only."""
    code = (
        "import os; from anomaly.model import tf; print(float(tf.reduce_sum(tf.ones(3))));"
        "import sys; print('python after', file=sys.stderr, flush=True); os.write(2, b'fd 2 after')"
    )
    env = {k: v for k, v in clean_env().items() if not k.startswith("TF_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3.0"
    assert done.stderr == "python after\nfd 2 after"


def test_a_failing_tensorflow_import_shows_what_it_printed(tmp_path):
    """The held-back output is not lost when the import fails: it is the only clue to what went wrong."""
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.write(2, b'libtensorflow.so: cannot open')\nraise ImportError('broken')\n")
    code = "from anomaly.model import _tensorflow\ntry:\n    _tensorflow()\nexcept ImportError as e:\n    print(e)"
    env = clean_env(PYTHONPATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "broken" and done.stderr == "libtensorflow.so: cannot open"


def test_the_colour_table_is_matplotlibs_magma_without_importing_it():
    from matplotlib import colormaps

    code = "import sys; from anomaly import plots; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr

    from anomaly.plots import MAGMA

    expected = colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255
    assert MAGMA.shape == (256, 3) and (MAGMA == expected.round().astype("uint8")).all()


def test_importing_the_app_loads_no_model_and_never_exits(tmp_path):
    """A missing model is the server's to report when it starts (``python app.py``), not an import's."""
    code = "import sys, app; print(sorted({'tensorflow', 'keras'} & set(sys.modules)), callable(app.build))"
    env = clean_env(ANOMALY_BUNDLE=str(tmp_path / "no-such-bundle"), GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[] True"
