"""web/js/duration_limits.js run by Node.js against a small stand-in of the frontend's graph
(app, api, nodes, links; the extension touches nothing else): the duration widget's maximum
follows the model selected on the loader, through LoRA nodes, and falls back to the schema's
maximum when no model is connected. Skipped where no ``node`` executable is installed."""

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


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_duration_widget_follows_the_selected_model(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text("export const app = globalThis.__app;\n")
    (tmp_path / "scripts" / "api.js").write_text("export const api = globalThis.__api;\n")
    pack = tmp_path / "extensions" / "pack" / "js"  # where ComfyUI serves web/js/ (relative imports resolve so)
    pack.mkdir(parents=True)
    shutil.copy(REPO / "web" / "js" / "duration_limits.js", pack)
    (tmp_path / "run.mjs").write_text(DRIVER)
    run = subprocess.run([NODE, "run.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == [
        [380.4, 300, 64],  # medium (the batch widget is left alone)
        [120.0, 120, 64],  # small-music: the value above the new maximum is lowered to it
        [380.4, 120, 64],  # unconnected: the schema's maximum again
        [380.4, 120, 64],  # a folder the route does not know: the schema's maximum
    ]
