"""The page's own scripts (gradio's ``head``): the microphone set-up and its problems, the verdict brought
into view after Analyze, and live listening that never stalls silently. Plain text; nothing runs here."""

import json

# Seconds without news from the server while recording after which the live tab says that it is stuck.
LIVE_STALL_S = 5
NO_MICROPHONE = "No microphone: allow it in the browser, or upload a recording"

# Microphone set-up for listening to a machine, in every getUserMedia call of the page: echo cancellation,
# noise suppression and automatic gain are off, because a machine's steady sound is exactly what noise
# suppression removes and its level is a cue that automatic gain evens out. When the browser refuses the
# microphone (no device, permission denied, or a page not served over HTTPS), the live tab says so plainly.
HEAD = """
<script>
// The API page opens on MCP when the app serves it; developers calling /score want the Python snippet first.
(() => {
  for (const name of ["pushState", "replaceState"]) {
    const original = history[name].bind(history);
    history[name] = (state, title, url) => {
      if (url) {
        const next = new URL(url, location.href);
        if (next.searchParams.get("view") === "api" && !next.searchParams.get("lang")) {
          next.searchParams.set("lang", "python");
          url = next.toString();
        }
      }
      return original(state, title, url);
    };
  }
})();
(() => {
  const message = NO_MICROPHONE_JSON;
  function show(reason) {
    const box = document.getElementById("live-mic-problem");
    if (!box) { setTimeout(() => show(reason), 500); return; }
    box.textContent = message + (reason ? " (" + reason + ")." : ".");
    box.hidden = false;
  }
  function hide() {
    const box = document.getElementById("live-mic-problem");
    if (box) box.hidden = true;
  }
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) {
    show(window.isSecureContext ? "this browser cannot record" : "the page is not served over HTTPS");
    return;
  }
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    if (constraints && constraints.audio) {
      const audio = constraints.audio === true ? {} : { ...constraints.audio };
      Object.assign(audio, { echoCancellation: false, noiseSuppression: false, autoGainControl: false });
      constraints = { ...constraints, audio };
    }
    try {
      const stream = await original(constraints);
      hide();
      return stream;
    } catch (error) {
      const why = { NotAllowedError: "permission denied", NotFoundError: "no microphone found",
                    NotReadableError: "the microphone is busy" }[error && error.name];
      show(why || (error && error.name) || "");
      throw error;
    }
  };
})();
</script>
<script>
// After Analyze (or an example) the verdict comes into view: on a phone it sits a screen and a half below
// the button, and without this Analyze seemed to do nothing. It scrolls once the new verdict is shown
// (the label and the details' heading differ from before the click, or were cleared in between), and only
// when the verdict card is not already on the screen.
(() => {
  const TRIGGERS = "#analyze-button, #analyze-image-button, #examples button";
  const shown = () => ["#label-output [data-testid=label-output-value]", "#details-output h4"]
    .map(q => (document.querySelector(q)?.textContent || "").trim());
  let before = null, cleared = false, since = 0;
  document.addEventListener("click", (event) => {
    if (!event.target.closest(TRIGGERS)) return;
    before = shown().join("|"); cleared = false; since = Date.now();
  }, true);
  const bringIntoView = () => {
    const card = document.getElementById("verdict-card");
    if (!card) return;
    const box = card.getBoundingClientRect();
    if (box.top >= 0 && box.top + Math.min(box.height, innerHeight / 2) <= innerHeight) return;
    card.scrollIntoView({ behavior: "smooth", block: "start" });
  };
  new MutationObserver(() => {
    if (before === null) return;
    if (Date.now() - since > 180000) { before = null; return; }
    const [label, heading] = shown();
    if (!label) { cleared = true; return; }
    if (!cleared && `${label}|${heading}` === before) return;
    before = null;
    requestAnimationFrame(bringIntoView);
  }).observe(document.documentElement, { subtree: true, childList: true, characterData: true });
})();
</script>
<script>
// Live never stalls silently. While the microphone records, the status line changes with every chunk the
// server takes (the seconds heard, then each reading). If it has not changed for a few seconds, the live
// tab says why in its problem box: no sound has reached the app, so the connection or the browser is stuck.
(() => {
  const STALL_S = LIVE_STALL_S;
  let last = null, changed = Date.now(), ours = false;
  // Recording: gradio shows Stop, or a "Waiting" spinner while the stream to the server is not yet open.
  const recording = () => [...document.querySelectorAll("#live-input button")]
    .some(b => /^(stop|waiting)/i.test((b.getAttribute("aria-label") || b.textContent || "").trim()));
  setInterval(() => {
    const box = document.getElementById("live-mic-problem");
    // The status's own text, not gradio's pending-time counter drawn over it.
    const status = document.querySelector("#live-status .prose") || document.getElementById("live-status");
    if (!box || !status) return;
    const text = status.textContent.trim();
    if (text !== last || !recording()) {
      last = text; changed = Date.now();
      if (ours) { box.hidden = true; ours = false; }
      return;
    }
    const quiet = Math.round((Date.now() - changed) / 1000);
    if (quiet < STALL_S || (!box.hidden && !ours)) return;
    const started = /^Waiting for sound/.test(text);
    box.textContent = (started
      ? `The microphone is on, but no sound has reached the app after ${quiet} s`
      : `No sound has reached the app for ${quiet} s`) +
      ": the connection may be slow or dropped. Wait a moment, or stop and press Record again.";
    box.hidden = false; ours = true;
  }, 1000);
})();
</script>
""".replace("NO_MICROPHONE_JSON", json.dumps(NO_MICROPHONE)).replace("LIVE_STALL_S", str(LIVE_STALL_S))
