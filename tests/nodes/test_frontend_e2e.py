"""The pack's web extension in ComfyUI's real frontend (the comfyui-frontend-package the server
serves), driven by headless Chromium over the DevTools protocol: a template is loaded and the
duration widget of SA3 Text Encode takes the maximum of the model selected on the SA3 Model
Loader (small 120 s, medium 380.4 s), lowering a value above it.

Needs a ComfyUI checkout (``COMFYUI_PATH``) and a ``chromium`` (or ``chromium-browser`` /
``google-chrome``) executable; skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest
import websocket

from tests.comfy_server import free_port, requires_comfyui
from tests.conftest import REPO
from tests.nodes.test_server_e2e import server  # noqa: F401  (the module's ComfyUI server fixture)

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [requires_comfyui, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to run the frontend")]
APP = "window.comfyAPI.app.app"
READ = f"""(() => {{
  const nodes = {APP}.graph._nodes;
  const loader = nodes.find((n) => n.comfyClass === "SA3ModelLoader");
  const text = nodes.find((n) => n.comfyClass === "SA3TextEncode");
  const duration = text.widgets.find((w) => w.name === "duration");
  return [loader.widgets.find((w) => w.name === "model_name").value, duration.options.max, duration.value];
}})()"""


def _choose(model: str) -> str:
    """Select ``model`` on the loader as a click in the combo does (value, then its callback)."""
    return f"""(() => {{
  const loader = {APP}.graph._nodes.find((n) => n.comfyClass === "SA3ModelLoader");
  const widget = loader.widgets.find((w) => w.name === "model_name");
  widget.value = {json.dumps(model)};
  widget.callback?.(widget.value);
  return new Promise((r) => setTimeout(() => r(true), 300));
}})()"""


class Browser:
    """Headless Chromium on one page, evaluated through the DevTools websocket."""

    def __init__(self, url: str):
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="sa3-chromium-")
        self.proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
                                      "--window-size=1600,1000", url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ws, self.calls = None, 0
        deadline = time.time() + 60
        while self.ws is None and time.time() < deadline:
            try:
                pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=5).read())
                page = next(p for p in pages if p["type"] == "page")
                self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
            except (OSError, StopIteration, ValueError):
                time.sleep(0.5)
        assert self.ws is not None, "Chromium did not open its DevTools port"

    def eval(self, expression: str):
        self.calls += 1
        self.ws.send(json.dumps({"id": self.calls, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.calls:
                result = message["result"]
                assert "exceptionDetails" not in result, result["exceptionDetails"]
                return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not self.eval(expression):
            assert time.time() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.5)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(request):
    browser = Browser(request.getfixturevalue("server").url)
    try:
        browser.wait_for(f"!!(window.comfyAPI?.app?.app?.graph && {APP}.extensionManager && "
                         f"{APP}.extensions?.some((e) => e.name === 'StableAudio3.DurationLimits'))")
        time.sleep(3)  # let the app restore its start-up graph first, or it would replace the one loaded here
        yield browser
    finally:
        browser.close()


def test_duration_widget_takes_the_selected_models_maximum(page):
    # (the fixture waited for StableAudio3.DurationLimits: web/js/ loaded, its imports resolved)
    workflow = (REPO / "example_workflows" / "01 Text to audio.json").read_text()
    loaded = f"{APP}.graph._nodes.some((n) => n.comfyClass === 'SA3TextEncode')"
    for _ in range(5):  # (again if the app's own start-up restore replaced it meanwhile)
        page.eval(f"{APP}.loadGraphData({workflow}).then(() => new Promise((r) => setTimeout(() => r(true), 500)))")
        if page.eval(loaded):
            break
    assert page.eval(READ) == ["small-music", 120, 30]  # the template's model, before any download
    page.eval(_choose("medium"))
    assert page.eval(READ) == ["medium", 380.4, 30]
    page.eval(f"""{APP}.graph._nodes.find((n) => n.comfyClass === "SA3TextEncode")
                      .widgets.find((w) => w.name === "duration").value = 300""")
    page.eval(_choose("tiny-small"))  # a folder of models/stable_audio_3: its own config's maximum
    assert page.eval(READ) == ["tiny-small", 120, 120]
