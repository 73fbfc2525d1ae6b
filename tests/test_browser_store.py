"""What the browser keeps, in a real browser (Debian's chromium through Playwright): a calibration until it is
forgotten, across reloads, and the machine's record of readings next to it.

The machine is adapted on the page on a few synthetic normal clips, as a visitor would; what localStorage
holds is read from the page itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from anomaly.ui.record import RECORD_KEY
from anomaly.ui.session import STORAGE_KEY

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
MACHINE = "Press 2, north bay"
N_NORMALS = 3

# The page's own Chromium (test_browser skips without it, and fails on CI) and helpers: pick a tab, upload
# files and wait for them, a screenshot per width.
import test_browser  # noqa: E402
from test_browser import expect, open_tab, shot, upload  # noqa: E402

# Its fixtures too: one Chromium for the module, and a fresh visitor at each width (``page``).
playwright, browser, page = test_browser.playwright, test_browser.browser, test_browser.page


@pytest.fixture(scope="module")
def normals(tmp_path_factory) -> list[Path]:
    from anomaly.synth import synthesize_clip

    out = tmp_path_factory.mktemp("press")
    paths = []
    for seed in range(N_NORMALS):
        wave, _ = synthesize_clip("source", "normal", 400 + seed)
        sf.write(out / f"press2_normal_{seed}.wav", wave, 16000, subtype="PCM_16")
        paths.append(out / f"press2_normal_{seed}.wav")
    return paths


def reload(tab) -> None:
    tab.reload()
    tab.wait_for_selector("#audio-input")
    tab.wait_for_timeout(1500)  # the load event has had its chance to restore a calibration


def load_clip(page, clip: Path) -> None:
    """A 10 s recording into the Analyze tab's player, loaded once the player shows its length (the player
    shows the file's name only for a moment, if at all)."""
    assert sf.info(str(clip)).duration == 10.0
    page.locator("#audio-input input[type=file]").set_input_files(str(clip))
    expect(page.locator("#audio-input")).to_contain_text("0:10")
    expect(page.locator("#audio-input .uploading")).to_have_count(0)


def stored(page, key: str) -> str | None:
    return page.evaluate("(key) => localStorage.getItem(key)", key)


def adapt(page, normals: list[Path]) -> None:
    open_tab(page, "adapt", "Adapt to my machine")
    page.locator("#calibration-name textarea, #calibration-name input").first.fill(MACHINE)
    upload(page, "#calibration-input", normals)
    page.click("#calibrate-button")
    expect(page.locator("#calibration-status")).to_contain_text(f"{MACHINE} on {len(normals)} normal")
    open_tab(page, "analyze", "Analyze")


def test_forget_then_two_reloads_the_calibration_stays_forgotten(page, normals, tmp_path):
    banner = page.locator("#reference-banner")
    adapt(page, normals)
    expect(banner).to_contain_text(f"Comparing with {MACHINE}")
    page.wait_for_function("(key) => localStorage.getItem(key) !== null", arg=STORAGE_KEY)
    reload(page)  # kept: the store works at all
    expect(banner).to_contain_text(f"Comparing with {MACHINE}")

    open_tab(page, "adapt", "Adapt to my machine")
    page.click("#forget-button")
    expect(page.locator("#calibration-status")).to_contain_text("Back to the model's own reference")
    page.wait_for_function("(key) => localStorage.getItem(key) === null", arg=STORAGE_KEY)
    for n in (1, 2):
        reload(page)
        assert stored(page, STORAGE_KEY) is None, f"reload {n}: the browser still keeps the calibration"
        expect(banner).to_be_hidden()
        open_tab(page, "adapt", "Adapt to my machine")
        expect(page.locator("#calibration-status")).not_to_contain_text(MACHINE)
        open_tab(page, "analyze", "Analyze")
    load_clip(page, ROOT / "examples" / "normal_source.wav")
    page.click("#analyze-button")
    expect(page.locator("#compared-with")).to_contain_text("demo gearbox")
    expect(page.locator("#compared-with")).not_to_contain_text(MACHINE)
    shot(page, tmp_path, "forgotten")


def test_the_machines_record_after_five_analyses_survives_a_reload(page, normals, tmp_path):
    record = page.locator("#machine-record")
    expect(record).to_be_hidden()  # the demo model keeps no record
    adapt(page, normals)
    expect(record).to_contain_text(f"Record of {MACHINE}")
    expect(record).to_contain_text("No readings yet")
    load_clip(page, ROOT / "examples" / "normal_source.wav")
    for n in range(1, 6):
        page.click("#analyze-button")
        expect(record).to_contain_text(f"{n} reading{'s' if n > 1 else ''} from")
    points = page.locator("#record-trend .record-point")
    expect(points).to_have_count(5)
    expect(page.locator("#record-trend .trend-threshold")).to_have_count(2)
    expect(page.locator("#record-csv")).to_contain_text("machine-record")
    assert stored(page, RECORD_KEY) is not None
    # Its text is readable on a phone: at least 12 px as drawn.
    smallest = page.evaluate(
        """() => { const svg = document.querySelector('#record-trend svg');
                   const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
                   return Math.min(...[...svg.querySelectorAll('text')].map(
                       t => parseFloat(t.getAttribute('font-size')) * scale)); }"""
    )
    assert smallest >= 12, f"record text {smallest:.1f} px at {page.viewport_size['width']} px"
    record.scroll_into_view_if_needed()
    shot(page, tmp_path, "record")

    reload(page)
    expect(page.locator("#reference-banner")).to_contain_text(f"Comparing with {MACHINE}")
    expect(record).to_contain_text("5 readings from")
    expect(points).to_have_count(5)
    shot(page, tmp_path, "record-reloaded")

    open_tab(page, "adapt", "Adapt to my machine")
    page.click("#forget-button")
    page.wait_for_function("(key) => localStorage.getItem(key) === null", arg=RECORD_KEY)
    open_tab(page, "analyze", "Analyze")
    expect(record).to_be_hidden()
