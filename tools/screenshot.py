"""Redraw the README's screenshot: a shipped template, run in a real ComfyUI, in headless Chromium.

Starts ComfyUI on the CPU with this pack only (the tiny test model stands in for small-music, so
no model download is needed and the generated audio is noise), opens the frontend, loads the
template the way the template browser does, queues it, waits for the run to finish and saves a
picture of the canvas with its spectrogram previews.

    COMFYUI_PATH=/path/to/ComfyUI python tools/screenshot.py [--workflow "06 Inpaint one region"] [-o docs/...png]

Needs Playwright (``pip install playwright``) and a Chromium (``apt-get install chromium``, or
``--chromium PATH``); the fixtures of ``../shared/fixtures`` (or ``SA3_FIXTURES``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.comfy_server import PACK_NAME, ComfyServer  # noqa: E402
from tests.conftest import fixture_root  # noqa: E402
from tests.test_workflows_e2e import write_wav  # noqa: E402

# a clean canvas: no first-run template dialog, minimap, canvas info, zoom menu or source badges
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False,
            "Comfy.Graph.CanvasMenu": False, "Comfy.NodeBadge.NodeSourceBadgeMode": "None",
            "Comfy.NodeBadge.NodeIdBadgeMode": "None"}


def start_server(root: Path) -> ComfyServer:
    fixtures = fixture_root()
    if fixtures is None or not (fixtures / "tiny-small").is_dir():
        raise SystemExit("the tiny-small fixture model is needed (../shared/fixtures or SA3_FIXTURES)")
    models = root / "models" / "stable_audio_3"
    models.mkdir(parents=True)
    for name in ("small-music", "small-music-base"):
        (models / name).symlink_to(fixtures / "tiny-small", target_is_directory=True)
    server = ComfyServer(root, {"stable_audio_3": models, "loras": fixtures / "loras" / "tiny-small"})
    write_wav(server.dirs["input"] / "sa3_input.wav", 30.0)  # the LoadAudio input (two sines)
    return server.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", default="06 Inpaint one region", help="template name in workflows/")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "spectrogram_workflow.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--size", default="1850x860", help="viewport WIDTHxHEIGHT while loading")
    parser.add_argument("--scale", type=float, default=0.75, help="canvas zoom of the picture")
    parser.add_argument("--set", action="append", default=["duration=20"], metavar="NAME=VALUE",
                        help="widget value for the run, on every node that has it (default duration=20)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    workflow = json.loads((REPO / "workflows" / f"{args.workflow}.json").read_text(encoding="utf-8"))
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="sa3-screenshot-") as tmp:
        server = start_server(Path(tmp))
        try:
            server.post("/settings", SETTINGS)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(server.url, wait_until="networkidle")
                page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
                page.evaluate("(wf) => window.app.loadGraphData(wf)", workflow)
                for item in args.set:
                    name, value = item.split("=", 1)
                    page.evaluate("""([name, value]) => {
                        for (const node of window.app.graph._nodes)
                            for (const w of node.widgets || []) if (w.name === name) w.value = Number(value);
                    }""", [name, value])
                page.evaluate("() => window.app.queuePrompt(0)")
                deadline = time.time() + 600
                while time.time() < deadline:  # the run is done when the queue is empty again
                    time.sleep(1)
                    queue = server.get("/queue")
                    if not queue["queue_running"] and not queue["queue_pending"] and server.get("/history"):
                        break
                history = server.get("/history")
                statuses = [entry["status"]["status_str"] for entry in history.values()]
                if statuses != ["success"]:
                    raise SystemExit(f"the run did not succeed ({statuses}):\n{server.log()[-3000:]}")
                # the whole graph at a zoom where every widget is drawn: viewport sized to its bounds
                x0, y0, x1, y1 = page.evaluate("""() => {
                    const nodes = window.app.graph._nodes;
                    const xs = nodes.map(n => n.pos[0]), ys = nodes.map(n => n.pos[1] - 30);
                    const xe = nodes.map(n => n.pos[0] + n.size[0]), ye = nodes.map(n => n.pos[1] + n.size[1]);
                    return [Math.min(...xs), Math.min(...ys), Math.max(...xe), Math.max(...ye)];
                }""")
                pad = 20
                canvas_w, canvas_h = page.evaluate(
                    "() => [window.app.canvasEl.clientWidth, window.app.canvasEl.clientHeight]")
                page.set_viewport_size({"width": int((x1 - x0) * args.scale) + 2 * pad + width - canvas_w,
                                        "height": int((y1 - y0) * args.scale) + 2 * pad + height - canvas_h})
                page.wait_for_timeout(1000)  # the canvas follows the window size
                page.evaluate("""([x0, y0, scale, pad]) => {
                    const ds = window.app.canvas.ds;
                    ds.scale = scale;
                    ds.offset = [pad / scale - x0, pad / scale - y0];
                    window.app.canvas.setDirty(true, true);
                }""", [x0, y0, args.scale, pad])
                page.wait_for_timeout(3000)  # previews drawn
                page.mouse.click(width - 5, height - 5)  # drop any hover tooltip
                page.evaluate("() => { document.querySelectorAll('.p-toast').forEach(e => e.remove()); }")
                canvas = page.locator("#graph-canvas")
                (canvas if canvas.count() else page).screenshot(path=str(args.output))
                browser.close()
        finally:
            server.stop()
    print(f"wrote {args.output} ({PACK_NAME} in a real ComfyUI, template {args.workflow})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
