"""The pack's web extension and templates in ComfyUI's real frontend (the comfyui-frontend-package
the server serves), driven by headless Chromium over the DevTools protocol: every template,
loaded as the template browser loads it, queues exactly its API twin (each widget holds the
twin's value); and the duration widget of SA3 Text Encode takes the maximum of the model
selected on the SA3 Model Loader (small 120 s, medium 380.4 s), lowering a value above it.

Needs a ComfyUI checkout (``COMFYUI_PATH``) and a ``chromium`` (or ``chromium-browser`` /
``google-chrome``) executable; skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import websocket

from tests.comfy_server import PACK_NAME, free_port
from tests.conftest import REPO, load_model, requires_comfyui
from tests.nodes.test_server_e2e import server  # noqa: F401  (the module's ComfyUI server fixture)
from tests.sa3.test_training import make_dataset

sys.path.insert(0, str(REPO / "tools"))
import check_workflows as cw
import file_module

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [requires_comfyui, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium to run the frontend")]
APP = "window.comfyAPI.app.app"
RUN_TIMEOUT = 300
CARD = "template-workflow-"  # data-testid prefix of a template card (TemplateWorkflowCard.vue)
DESCRIPTIONS = file_module.load("nodes/templates.py").DESCRIPTIONS
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


@pytest.fixture(scope="module")
def object_info(request):
    """The server's node schemas (``GET /object_info``)."""
    return request.getfixturevalue("server").get("/object_info")


def load_template(page, name: str) -> None:
    """Load ``workflows/<name>.json`` into the app, as the template browser does."""
    workflow = cw.read_json(cw.WORKFLOWS / f"{name}.json")
    first = next(n for n in workflow["nodes"] if n["type"] not in cw.FRONTEND_ONLY)
    loaded = f"{APP}.graph._nodes.some((n) => n.id === {first['id']} && n.comfyClass === {json.dumps(first['type'])})"
    page.eval(f"{APP}.graph.clear()")
    for _ in range(5):  # (again if the app's own start-up restore replaced it meanwhile)
        page.eval(f"{APP}.loadGraphData({json.dumps(workflow)})"
                  ".then(() => new Promise((r) => setTimeout(() => r(true), 500)))")
        if page.eval(loaded):
            return
    pytest.fail(f"{name} did not load")


def differences(expected: dict, queued: dict, schemas: dict) -> list[str]:
    """Where the prompt the frontend queues for a loaded template differs from its API twin:
    node by node, input by input (a bool differs from 1; 30 and 30.0 are one JSON number).
    Inputs the node's schema does not have are left out: the frontend also sends its own widgets
    (SaveAudio's ``audioUI`` player), which the server ignores."""
    problems = [f"node {i}: only {'in the API twin' if i in expected else 'in the browser'}"
                for i in sorted(set(expected) ^ set(queued))]
    for i in sorted(set(expected) & set(queued)):
        want, got = expected[i], queued[i]
        if want["class_type"] != got["class_type"]:
            problems.append(f"node {i}: {got['class_type']} in the browser, {want['class_type']} in the API twin")
            continue
        known = {name for section in schemas[want["class_type"]]["input"].values() for name in section}
        for name in sorted((set(want["inputs"]) | set(got["inputs"])) & known):
            a, b = want["inputs"].get(name, "<missing>"), got["inputs"].get(name, "<missing>")
            if a != b or isinstance(a, bool) != isinstance(b, bool):
                problems.append(f"node {i} ({want['class_type']}) {name}: {b!r} in the browser, {a!r} in the API twin")
    return problems


@pytest.mark.parametrize("name", cw.workflow_names())
def test_template_loads_with_its_api_twins_values(page, object_info, name):
    """Each template, loaded in the real frontend, queues exactly its API twin: every widget holds
    the value the twin has (a widget value the schema does not expect shifts all later ones)."""
    load_template(page, name)
    queued = page.eval(f"{APP}.graphToPrompt().then((p) => p.output)")
    assert differences(cw.read_json(cw.API_DIR / f"{name}.json"), queued, object_info) == []


def test_cancel_button_keeps_what_was_trained(page, request):
    """The training template queued from the browser and stopped with its Cancel button (the
    Comfy.Interrupt command the button runs: POST /interrupt for the running prompt): the steps
    done are saved as a LoRA the library loads, and the run ends as interrupted."""
    srv = request.getfixturevalue("server")
    make_dataset(srv.dirs["input"] / "sa3_training")
    load_template(page, "10 Train a LoRA")
    for node, name, value in (("SA3ModelLoader", "model_name", "tiny-small"), ("SA3ModelLoader", "download", False),
                              ("SA3TrainLoRA", "steps", 100000), ("SA3TrainLoRA", "clip_seconds", 2),
                              ("SA3TrainLoRA", "output_name", "browser_cancel")):
        page.eval(f"""{APP}.graph._nodes.find((n) => n.comfyClass === {json.dumps(node)})
                          .widgets.find((w) => w.name === {json.dumps(name)}).value = {json.dumps(value)}""")
    page.eval("""window.comfyAPI.api.api.addEventListener("progress", (e) => { window.sa3Progress = e.detail; })""")
    page.eval(f"{APP}.queuePrompt(0, 1).then(() => true)")
    page.wait_for("(window.sa3Progress?.value ?? 0) >= 2", timeout=RUN_TIMEOUT)
    progress = page.eval("window.sa3Progress")
    page.eval(f"{APP}.extensionManager.command.execute('Comfy.Interrupt').then(() => true)")
    entry = srv.wait(progress["prompt_id"], timeout=RUN_TIMEOUT)
    assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]], entry["status"]
    lora = srv.root / "models" / "loras" / "browser_cancel.safetensors"
    prepared = load_model("tiny-small").prepare_lora(lora)  # the library's LoRA loader reads it
    assert prepared.file.adapter_type == "dora-rows" and prepared.layers


def test_duration_widget_takes_the_selected_models_maximum(page):
    # (the fixture waited for StableAudio3.DurationLimits: web/js/ loaded, its imports resolved)
    load_template(page, "01 Text to audio")
    assert page.eval(READ) == ["small-music", 120, 30]  # the template's model, before any download
    page.eval(_choose("medium"))
    assert page.eval(READ) == ["medium", 380.4, 30]
    page.eval(f"""{APP}.graph._nodes.find((n) => n.comfyClass === "SA3TextEncode")
                      .widgets.find((w) => w.name === "duration").value = 300""")
    page.eval(_choose("tiny-small"))  # a folder of models/stable_audio_3: its own config's maximum
    assert page.eval(READ) == ["tiny-small", 120, 120]


def test_template_browser_lists_the_pack_in_order_with_descriptions(page):
    """Templates > Custom Nodes > the pack, in the real frontend: the cards in numeric order (the
    server's list, put in order by nodes/templates.py), each with its description
    (web/js/template_descriptions.js) where the frontend alone shows the file name again."""
    cards = f"""[...document.querySelectorAll('[data-testid^="{CARD}"]')]"""
    page.eval(f"{APP}.extensionManager.command.execute('Comfy.BrowseTemplates').then(() => true)")
    page.wait_for(f"[...document.querySelectorAll('li[role=option]')].some((o) => o.textContent.trim() === "
                  f"{json.dumps(PACK_NAME)})", timeout=60)
    page.eval(f"[...document.querySelectorAll('li[role=option]')].find((o) => o.textContent.trim() === "
              f"{json.dumps(PACK_NAME)}).click()")
    names = cw.workflow_names()
    described = f"{cards}.map((c) => [c.dataset.testid.slice({len(CARD)}), c.querySelector('p').textContent.trim()])"
    page.wait_for(f"{cards}.length === {len(names)} && {described}.every(([n, d]) => n !== d)", timeout=60)
    try:
        assert page.eval(described) == [[name, DESCRIPTIONS[name]] for name in names]
    finally:
        page.eval("document.querySelector('.p-dialog-close-button')?.click()")


INPAINT = f"{APP}.graph._nodes.find((n) => n.comfyClass === 'SA3InpaintMask')"
INPAINT_INPUTS = f"""(() => {{
  const node = {INPAINT};
  const shown = node.widgets.filter((w) => node.isWidgetVisible(w)).map((w) => w.name);
  const latent = node.inputs.find((i) => i.name === "latent");
  return [shown, latent ? latent.link != null : null];
}})()"""


def _inpaint_mode(mode: str) -> str:
    """Pick ``mode`` on SA3 Inpaint Regions as a click in the combo does (value, then its callback)."""
    return f"""(() => {{
  const widget = {INPAINT}.widgets.find((w) => w.name === "mode");
  widget.value = {json.dumps(mode)};
  widget.callback?.(widget.value);
  return true;
}})()"""


def test_inpaint_regions_shows_the_inputs_of_its_mode(page):
    """regions mode shows the regions text only; continuation shows keep_seconds and the latent
    socket; a connected latent (an older workflow's) stays in either mode; the hidden widget's
    value is still queued (the template's twin test checks every value)."""
    load_template(page, "06 Inpaint one region")
    regions, continuation = ["mode", "regions"], ["mode", "keep_seconds"]
    assert page.eval(INPAINT_INPUTS) == [regions, None]
    page.eval(_inpaint_mode("continuation"))
    assert page.eval(INPAINT_INPUTS) == [continuation, False]
    page.eval(_inpaint_mode("regions"))
    assert page.eval(INPAINT_INPUTS) == [regions, None]
    queued = page.eval(f"{APP}.graphToPrompt().then((p) => p.output)")
    mask = next(n for n in queued.values() if n["class_type"] == "SA3InpaintMask")
    assert mask["inputs"]["keep_seconds"] == 10.0  # hidden, still saved and queued

    load_template(page, "08 Continue a clip")
    assert page.eval(INPAINT_INPUTS) == [continuation, False]
    page.eval(f"""(() => {{
  const latent = window.LiteGraph.createNode("EmptyLatentAudio");
  {APP}.graph.add(latent);
  const node = {INPAINT};
  latent.connect(0, node, node.inputs.findIndex((i) => i.name === "latent"));
  return true;
}})()""")
    assert page.eval(INPAINT_INPUTS) == [continuation, True]
    page.eval(_inpaint_mode("regions"))
    assert page.eval(INPAINT_INPUTS) == [regions, True]  # connected: kept
    page.eval(f"{INPAINT}.disconnectInput({INPAINT}.inputs.findIndex((i) => i.name === 'latent'))")
    assert page.eval(INPAINT_INPUTS) == [regions, None]
