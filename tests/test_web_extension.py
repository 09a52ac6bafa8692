"""The pack's web extensions run by Node.js against a small stand-in of the frontend's graph
(app, api, nodes, links; the extensions touch nothing else). duration_limits.js: the duration
widget's maximum follows the model selected on the loader, through LoRA nodes, and falls back to
the schema's maximum when no model is connected. inpaint_modes.js: SA3 Inpaint Regions shows the
inputs of its mode. Skipped where no ``node`` executable is installed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO

NODE = shutil.which("node")

DRIVER = r"""
const registered = [];
globalThis.__app = { registerExtension: (e) => registered.push(e), graph: null };
globalThis.__api = {
  fetchApi: async (route) => ({ ok: route === "/sa3/max_durations",
                                json: async () => ({ "small-music": 120.0007, medium: 380.4357 }) }),
};
await import("./extensions/pack/js/duration_limits.js");
const ext = registered[0];
const tick = () => new Promise((r) => setTimeout(r, 5));
class Graph {
  constructor() { this._nodes = []; this.links = new Map(); }
  getNodeById(id) { return this._nodes.find((n) => n.id === id) ?? null; }
  setDirtyCanvas() {}
}
const graph = new Graph();
globalThis.__app.graph = graph;
function add(id, type, widgets, inputs = []) {
  const node = { id, type, comfyClass: type, graph, widgets, inputs };
  graph._nodes.push(node);
  ext.nodeCreated(node);
  return node;
}
const loader = add(1, "SA3ModelLoader", [{ name: "model_name", value: "medium", options: {} }]);
add(2, "SA3LoraLoader", [{ name: "strength_dit", value: 1, options: { max: 10 } }], [{ name: "model", link: 10 }]);
const text = add(3, "SA3TextEncode", [{ name: "duration", value: 300, options: { min: 0.1, max: 380.4 } },
                                      { name: "batch_size", value: 1, options: { max: 64 } }],
                 [{ name: "model", link: 11 }]);
graph.links.set(10, { origin_id: 1 });
graph.links.set(11, { origin_id: 2 });
const seen = [];
const look = () => seen.push([text.widgets[0].options.max, text.widgets[0].value, text.widgets[1].options.max]);
await ext.setup(); await tick(); look();                      // medium, through the LoRA loader
loader.widgets[0].value = "small-music"; loader.widgets[0].callback?.(); await tick(); look();  // clamped
text.inputs[0].link = null; text.onConnectionsChange(); await tick(); look();  // no model: the schema's max
loader.widgets[0].value = "my-finetune"; text.inputs[0].link = 11; text.onConnectionsChange(); await tick(); look();
console.log(JSON.stringify(seen));
"""


def _run(tmp_path, driver: str):
    """``driver`` run by Node.js beside web/js/ as ComfyUI serves it; what it printed, as JSON."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text("export const app = globalThis.__app;\n")
    (tmp_path / "scripts" / "api.js").write_text("export const api = globalThis.__api;\n")
    pack = tmp_path / "extensions" / "pack" / "js"  # where ComfyUI serves web/js/ (relative imports resolve so)
    pack.mkdir(parents=True)
    for script in (REPO / "web" / "js").glob("*.js"):
        shutil.copy(script, pack)
    (tmp_path / "run.mjs").write_text(driver)
    run = subprocess.run([NODE, "run.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_duration_widget_follows_the_selected_model(tmp_path):
    assert _run(tmp_path, DRIVER) == [
        [380.4, 300, 64],  # medium (the batch widget is left alone)
        [120.0, 120, 64],  # small-music: the value above the new maximum is lowered to it
        [380.4, 120, 64],  # unconnected: the schema's maximum again
        [380.4, 120, 64],  # a folder the route does not know: the schema's maximum
    ]


INPAINT_DRIVER = r"""
const registered = [];
globalThis.__app = { registerExtension: (e) => registered.push(e) };
await import("./extensions/pack/js/inpaint_modes.js");
const ext = registered[0];
const widget = (name, value) => ({ name, value, options: {} });
const node = {
  type: "SA3InpaintMask", comfyClass: "SA3InpaintMask", size: [320, 150],
  widgets: [widget("mode", "regions"), widget("regions", "2-4"), widget("keep_seconds", 10)],
  inputs: [{ name: "latent", type: "LATENT", link: null, tooltip: "older workflows" }],
  removeInput(i) { this.inputs.splice(i, 1); },
  addInput(name, type, extra) { this.inputs.push({ name, type, link: null, ...extra }); },
  computeSize() { return [320, 40 + 20 * this.widgets.filter((w) => !w.hidden).length]; },
  setSize(size) { this.size = size; },
};
const seen = [];
const look = () => seen.push([node.widgets.filter((w) => !w.hidden).map((w) => w.name),
                              node.inputs.map((i) => [i.name, i.link, i.tooltip]), node.size[1]]);
const pick = (mode) => { node.widgets[0].value = mode; node.widgets[0].callback?.(mode); look(); };
ext.nodeCreated(node); look();                          // a new node: regions mode
pick("continuation");
node.inputs[0].link = 7; node.onConnectionsChange(); pick("regions");  // connected: kept
node.inputs[0].link = null; node.onConnectionsChange(); look();         // disconnected: gone
node.widgets[0].value = "continuation"; ext.loadedGraphNode(node); look();  // a saved continuation node
console.log(JSON.stringify(seen));
"""


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_inpaint_regions_shows_the_inputs_of_its_mode(tmp_path):
    latent = ["latent", None, "older workflows"]
    assert _run(tmp_path, INPAINT_DRIVER) == [
        [["mode", "regions"], [], 80],
        [["mode", "keep_seconds"], [latent], 80],
        [["mode", "regions"], [["latent", 7, "older workflows"]], 80],
        [["mode", "regions"], [], 80],
        [["mode", "keep_seconds"], [latent], 80],
    ]
