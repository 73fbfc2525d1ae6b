"""Hub resolution, fallbacks, model card and publishing, against a local fake Hub (tests/hub_server.py).

Nothing here is mocked: ``huggingface_hub`` talks HTTP to a real local server, writes a real cache, and
``verify_bundle`` checks real checksums. The bundle files are placeholder bytes, since resolution never
loads the Keras models.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
from hub_server import FakeHub

from anomaly.bundle import BUNDLE_FILES, verify_bundle, write_config
from anomaly.card import TEMPLATE, about_markdown, card_variables, render_model_card
from anomaly.config import Settings
from anomaly.errors import BundleError, HubError
from anomaly.features import FeatureParams
from anomaly.hub import ResolvedBundle, publish, resolve_bundle

ROOT = Path(__file__).resolve().parent.parent
REPO = "acme/gearbox-check"
SHA = "1a2b3c4d" * 5  # the fixed commit the fake Hub serves REPO at
THRESHOLDS = {
    "maintenance": 5.0,
    "severe": 9.0,
    "method": "gamma",
    "maintenance_quantile": 0.9,
    "severe_quantile": 0.999,
}
METRICS = {
    "test_set": "synthetic test split, seed 3",
    "source": {
        "auc": 0.9312,
        "pauc": 0.8125,
        "n_normal": 20,
        "n_anomaly": 40,
        "faults": {"broken_tooth": {"auc": 0.9876, "pauc": 0.95}, "wear": {"auc": 0.71, "pauc": 0.55}},
    },
    "target": {"auc": 0.8421, "pauc": 0.7, "n_normal": 20, "n_anomaly": 40},
    "mean": {"auc": 0.8866, "pauc": 0.7562},
}


def make_bundle(folder: Path, *, seed: int = 0, **extra) -> Path:
    """A bundle that passes ``verify_bundle``: placeholder model bytes and a real config with checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(BUNDLE_FILES):
        (folder / name).write_bytes(bytes((seed * 31 + i * 7 + k) % 256 for k in range(3000)))
    config = {
        "format_version": 1,
        "preprocessing": FeatureParams().to_dict(),
        "thresholds": dict(THRESHOLDS),
        "training": {"data": "synthetic gearbox corpus, seed 0", "synthetic": True, "n_clips": 33},
        **extra,
    }
    write_config(folder, config)
    verify_bundle(folder)
    return folder


def closed_port_url() -> str:
    """An endpoint nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle", metrics=METRICS)


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    """The fallback folder shipped with the code (resolution only returns its path)."""
    return make_bundle(tmp_path / "artifacts", seed=1)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HF cache. huggingface_hub reads HF_HOME at import, so it is also passed explicitly."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hf" / "hub"


@pytest.fixture
def hub(bundle: Path):
    with FakeHub() as server:
        server.add_repo(REPO, bundle, sha=SHA, tags=("v1",))
        yield server


def resolve(hub_url: str, cache: Path, bundled: Path, revision: str | None = "v1", **kw) -> ResolvedBundle:
    return resolve_bundle(REPO, revision, endpoint=hub_url, cache_dir=cache, bundled=bundled, **kw)


def median_seconds(action, runs: int = 3) -> float:
    """The median wall time of ``runs`` calls: one slow run on a busy machine does not decide a test."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        action()
        times.append(time.monotonic() - started)
    return statistics.median(times)


# --- downloads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("revision", ["v1", "main", SHA])
def test_downloads_pinned_revision_into_cache(hub, cache, bundled, bundle, revision):
    resolved = resolve(hub.url, cache, bundled, revision)

    assert resolved.source == "hub"
    assert resolved.revision == SHA
    assert resolved.repo_id == REPO
    assert resolved.path.is_relative_to(cache)
    assert resolved.path.name == SHA
    for name in ("config.json", *BUNDLE_FILES):
        assert (resolved.path / name).read_bytes() == (bundle / name).read_bytes()
    assert f"{REPO} @ 1a2b3c4" in resolved.message and "verified" in resolved.message


def test_second_start_uses_cache_when_hub_is_down(hub, cache, bundled):
    first = resolve(hub.url, cache, bundled)
    url = hub.url
    hub.stop()

    second = resolve(url, cache, bundled)

    assert second.source == "hub-cache"
    assert second.path == first.path
    assert second.revision == SHA
    assert "unreachable" in second.message and "cached copy" in second.message
    assert median_seconds(lambda: resolve(url, cache, bundled)) < 3.0


def test_a_hub_in_trouble_is_an_outage_not_a_refusal(hub, cache, bundled):
    """Server errors (5xx) count as unreachable: the cached copy, else the bundled model."""
    hub.fail_with = 503
    nothing_cached = resolve(hub.url, cache, bundled)
    assert nothing_cached.source == "bundled" and "unreachable" in nothing_cached.message
    assert "503" in nothing_cached.message

    hub.fail_with = None
    resolve(hub.url, cache, bundled)
    hub.fail_with = 500
    assert resolve(hub.url, cache, bundled).source == "hub-cache"


@pytest.mark.parametrize("environ", [{}, {"ANOMALY_HUB_REPO": "  ", "ANOMALY_HUB_REVISION": "v1"}], ids=["unset", "blank"])
def test_unset_repo_means_bundled_and_no_request(hub, cache, bundled, environ):
    settings = Settings.from_environ(environ)

    resolved = resolve_bundle(settings.hub_repo, settings.hub_revision, endpoint=hub.url, cache_dir=cache, bundled=bundled)

    assert resolved == ResolvedBundle(bundled, "bundled", None, None, resolved.message)
    assert "ANOMALY_HUB_REPO" in resolved.message
    assert hub.requests == 0
    assert not cache.exists()


def test_env_vars_in_a_fresh_process(hub, tmp_path, bundled):
    """The realistic path: the variables read by ``anomaly.config`` (HF_HOME by huggingface_hub at import)."""
    code = (
        "import json; from pathlib import Path; from anomaly.config import Settings; "
        "from anomaly.hub import resolve_bundle; s = Settings.from_environ(); "
        f"r = resolve_bundle(s.hub_repo, s.hub_revision, endpoint=s.hub_endpoint, bundled=Path({str(bundled)!r})); "
        "print(json.dumps({'path': str(r.path), 'source': r.source, 'revision': r.revision}))"
    )
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-env"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "ANOMALY_HUB_REPO": REPO,
        "ANOMALY_HUB_REVISION": "v1",
    }
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["source"] == "hub"
    assert result["revision"] == SHA
    assert Path(result["path"]).is_relative_to(tmp_path / "hf-env" / "hub")
    assert any(path.startswith("/api/models/acme/gearbox-check/revision/v1") for _, path in hub.log)


# --- fallbacks ------------------------------------------------------------------------------------


def test_closed_port_falls_back_to_bundled_fast(cache, bundled, caplog):
    caplog.set_level(logging.WARNING, logger="anomaly")
    url = closed_port_url()
    resolved = resolve(url, cache, bundled)

    assert resolved.source == "bundled"
    assert resolved.path == bundled
    assert resolved.revision is None
    assert f"Hub {REPO} unreachable" in resolved.message
    assert "bundled model" in resolved.message
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert median_seconds(lambda: resolve(url, cache, bundled)) < 3.0  # no retries with back-off


def test_silent_hub_falls_back_within_timeout(hub, cache, bundled):
    hub.hang = True
    resolved = resolve(hub.url, cache, bundled, timeout_s=0.5)

    assert resolved.source == "bundled"
    assert "no answer within 0.5 s" in resolved.message
    assert hub.requests == 1  # one request, given up on: no retry
    assert median_seconds(lambda: resolve(hub.url, cache, bundled, timeout_s=0.5)) < 0.5 + 1.5


def test_silent_hub_with_cached_copy_uses_it(hub, cache, bundled):
    resolve(hub.url, cache, bundled)
    hub.hang = True

    resolved = resolve(hub.url, cache, bundled, timeout_s=1.0)

    assert resolved.source == "hub-cache"
    assert resolved.revision == SHA


def test_corrupted_download_is_refused_then_recovered(hub, cache, bundled, caplog):
    caplog.set_level(logging.WARNING, logger="anomaly")
    hub.corrupt(REPO, "encoder.keras")

    refused = resolve(hub.url, cache, bundled)

    assert refused.source == "bundled"
    assert refused.path == bundled
    assert "failed verification" in refused.message
    assert "encoder.keras does not match its checksum" in refused.message
    assert any("encoder.keras" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    # The damaged copy must not be reused from the cache, neither offline nor once the Hub serves it right.
    url = hub.url
    hub.corrupt(REPO, "encoder.keras", on=False)
    assert resolve(hub.url, cache, bundled).source == "hub"
    hub.stop()
    assert resolve(url, cache, bundled).source == "hub-cache"


def test_corrupted_cache_is_not_used(hub, cache, bundled):
    first = resolve(hub.url, cache, bundled)
    (first.path / "arrays.npz").resolve().write_bytes(b"tampered")
    url = hub.url
    hub.stop()

    resolved = resolve(url, cache, bundled)

    assert resolved.source == "bundled"
    assert "cached copy failed verification" in resolved.message
    assert "arrays.npz" in resolved.message


@pytest.mark.parametrize(
    ("repo", "revision", "reason"),
    [
        ("acme/no-such-model", "main", "repository not found, or private and no valid HF_TOKEN"),
        (REPO, "v9", "no such branch, tag or commit"),
    ],
    ids=["repo", "revision"],
)
def test_a_missing_repo_or_revision_is_an_error_not_the_demo_model(hub, cache, bundled, repo, revision, reason):
    resolve(hub.url, cache, bundled)  # a good cached copy of REPO must not hide the mistake either
    with pytest.raises(HubError) as raised:
        resolve_bundle(repo, revision, endpoint=hub.url, cache_dir=cache, bundled=bundled)

    message = str(raised.value)
    assert message == (
        f"Hub repo {repo} @ {revision} is not available: {reason} (check ANOMALY_HUB_REPO and ANOMALY_HUB_REVISION)"
    )


@pytest.mark.parametrize("repo", ["acme/gearbox/check", "acme/gear box", "acme/--gearbox"])
def test_a_malformed_repo_id_is_an_error_before_any_request(hub, cache, bundled, repo):
    with pytest.raises(HubError, match=f"Hub repo {repo} @ main is not available: not a repo id"):
        resolve_bundle(repo, None, endpoint=hub.url, cache_dir=cache, bundled=bundled)
    assert hub.requests == 0


def test_a_mistyped_repo_stops_the_cli_with_one_line_and_exit_2(hub, tmp_path):
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf"),
        "ANOMALY_HUB_REPO": "acme/gearbox-chek",
    }
    for name in ("ANOMALY_BUNDLE", "ANOMALY_HUB_REVISION", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "anomaly", "predict", str(ROOT / "examples" / "fault_tooth.wav")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: Hub repo acme/gearbox-chek @ main is not available: repository not found, or private and no "
        "valid HF_TOKEN (check ANOMALY_HUB_REPO and ANOMALY_HUB_REVISION)"
    ]


# --- model card -----------------------------------------------------------------------------------


def test_model_card_content_and_metadata(bundle):
    config = verify_bundle(bundle)
    card = render_model_card(config, REPO)
    text = str(card)

    assert card.data.license == "apache-2.0"
    assert card.data.library_name == "keras"
    assert card.data.pipeline_tag == "audio-classification"
    assert set(card.data.tags) == {
        "audio",
        "anomaly-detection",
        "machine-condition-monitoring",
        "dcase",
        "gearbox",
    }
    assert text.startswith("---\n")
    assert "| source | 0.931 | 0.812 | 20 | 40 |" in text
    assert "| target | 0.842 | 0.700 | 20 | 40 |" in text
    assert "| source | broken_tooth | 0.988 | 0.950 |" in text
    assert "| NEEDS MAINTENANCE | 5.000 |" in text and "0.9 quantile" in text
    assert "| SEVERE ANOMALY | 9.000 |" in text and "0.999 quantile" in text
    assert "trained on synthetic data" in text and "synthetic gearbox corpus" in text
    assert "not a safety system" in text.lower()
    assert f"ANOMALY_HUB_REPO={REPO}" in text and "python -m anomaly predict" in text
    assert "| n_mels | 128 |" in text
    for name in BUNDLE_FILES:
        assert f"`{config['files'][name]}`" in text


def test_model_card_without_metrics_or_synthetic_data(bundle):
    config = verify_bundle(bundle)
    config.pop("metrics")
    config["training"] = {"data": "real recordings, line 4", "synthetic": False}

    text = str(render_model_card(config, REPO))

    assert "Not evaluated" in text
    assert "trained on synthetic data" not in text
    assert "real recordings, line 4" in text


def test_about_page_and_model_card_share_one_text(bundle):
    config = verify_bundle(bundle)
    card = str(render_model_card(config, REPO))
    about = about_markdown(config, model_line="Model: the bundled model.", max_seconds=120, max_file_mb=50)

    # The same paragraphs, word for word: the limitations, the plain-words advice and the metrics.
    for heading in ("## Limitations", "## Adapt it to your machine first", "## Metrics", "## Intended use"):
        assert _section(about, heading) == _section(card, heading)
    assert "not recordings of real machines" in _section(about, "## Adapt it to your machine first")
    assert "**Adapt to my machine**" in about
    assert "Unfamiliar machine: adapt first" in about
    assert "| NEEDS MAINTENANCE | 5.00 to 9.00 |" in about
    assert "0.5 s to 120 s" in about and "at most 50 MB" in about
    assert "Model: the bundled model." in about
    # The About page has no YAML metadata and none of the Hub-only sections.
    assert not about.startswith("---")
    assert "library_name" not in about
    for hub_only in (
        "## Files",
        "## Preprocessing",
        f"ANOMALY_HUB_REPO={REPO}",
        config["files"]["arrays.npz"],
    ):
        assert hub_only in card and hub_only not in about


def test_template_variables_are_all_filled(bundle):
    config = verify_bundle(bundle)
    environment = jinja2.Environment()
    needed = jinja2.meta.find_undeclared_variables(environment.parse(TEMPLATE.read_text(encoding="utf-8")))
    for hub in (True, False):
        given = set(card_variables(config, hub=hub, repo_id=REPO)) | {"card_data"}
        assert needed <= given, f"template variables not given (hub={hub}): {sorted(needed - given)}"

    bare = {
        "format_version": 1,
        "preprocessing": FeatureParams().to_dict(),
        "thresholds": {"maintenance": 2.0},
    }
    for text in (
        str(render_model_card(config, REPO)),
        about_markdown(config),
        str(render_model_card(bare, REPO)),
        about_markdown(bare, max_seconds=120, max_file_mb=50, max_batch_files=100, upload_kept_minutes=30),
    ):
        for leftover in ("{{", "}}", "{%", "%}", "{#", "#}"):
            assert leftover not in text
        assert "\n\n\n" not in text, "the template's tags left empty lines behind"


def _section(markdown: str, heading: str) -> str:
    """The text of one ``## `` section, heading included."""
    start = markdown.index(heading + "\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else None].strip()


# --- publishing -----------------------------------------------------------------------------------


def test_publish_then_download_round_trip(cache, bundled, bundle):
    with FakeHub() as hub:
        url = publish(bundle, "me/gearbox", endpoint=hub.url, token="hf_test", tag="v1")
        sha = url.rsplit("/", 1)[-1]

        stored = hub.files("me/gearbox", "v1")
        assert url == f"{hub.url}/me/gearbox/commit/{sha}"
        assert {"config.json", "README.md", *BUNDLE_FILES} <= set(stored)
        assert "| source | 0.931 | 0.812 | 20 | 40 |" in stored["README.md"].decode()
        assert hub.repos["me/gearbox"].commits[sha].message == "Upload gearbox sound check bundle"
        assert "Bearer hf_test" in hub.authorization
        # One commit on top of the repo's initial one: the files and the card arrive together.
        assert hub.repos["me/gearbox"].commits[sha].parent is not None
        assert sum(1 for method, path in hub.log if "/commit/" in path and method == "POST") == 1

        resolved = resolve_bundle("me/gearbox", "v1", endpoint=hub.url, cache_dir=cache, bundled=bundled)

    assert resolved.source == "hub"
    assert resolved.revision == sha
    for name in ("config.json", *BUNDLE_FILES):
        assert (resolved.path / name).read_bytes() == (bundle / name).read_bytes()


def test_publish_to_a_branch(bundle):
    with FakeHub() as hub:
        url = publish(bundle, "me/gearbox", endpoint=hub.url, revision="staging", commit_message="try")
        sha = url.rsplit("/", 1)[-1]
        repo = hub.repos["me/gearbox"]

        assert repo.branches["staging"] == sha
        assert "config.json" not in hub.files("me/gearbox", "main")
        assert repo.commits[sha].message == "try"


def test_publish_refuses_an_unverified_bundle(bundle):
    (bundle / "decoder.keras").write_bytes(b"not the decoder that was checksummed")
    with FakeHub() as hub:
        with pytest.raises(BundleError, match="decoder.keras"):
            publish(bundle, "me/gearbox", endpoint=hub.url)
        assert hub.requests == 0
