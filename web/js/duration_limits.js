// Stable Audio 3: the duration widgets show the maximum of the model selected on the loader they
// are connected to (small 120 s, medium 380.4 s), instead of one static maximum for every model.
//
// ComfyUI checks a number widget against the schema's one `max` (the longest official model's)
// and a node's validate_inputs never sees the model chosen on another node; the browser sees the
// whole graph. Each model choice's longest duration comes from GET /sa3/max_durations
// (nodes/limits.py). The model's own limit is checked again when SA3 Text Encode runs, before
// anything is encoded, so a graph queued without this extension is still refused in time.
import { app } from "../../../scripts/app.js"; // served as /extensions/<pack>/js/duration_limits.js
import { api } from "../../../scripts/api.js";

const LOADERS = { SA3ModelLoader: "model_name", SA3CheckpointLoader: "ckpt_name" };
const PASS_THROUGH = new Set(["SA3LoraLoader", "SA3LoraStrength"]); // model in -> model out
const LIMITED = { SA3TextEncode: ["duration"], SA3EmptyLatent: ["duration"] };

let limits = {}; // model choice -> seconds
const staticMax = new Map(); // widget -> the schema's max, restored when no model is known

function linkOf(graph, id) {
  if (id == null) return null;
  return graph.links instanceof Map ? graph.links.get(id) : graph.links?.[id];
}

// The model choice feeding `node`'s "model" input: up through LoRA nodes to a loader.
function modelChoice(node) {
  for (let hops = 0; node && hops < 64; hops++) {
    const type = node.comfyClass ?? node.type;
    if (type in LOADERS) {
      return node.widgets?.find((w) => w.name === LOADERS[type])?.value ?? null;
    }
    if (hops > 0 && !PASS_THROUGH.has(type)) return null;
    const input = node.inputs?.find((i) => i.name === "model");
    const link = linkOf(node.graph, input?.link);
    node = link ? node.graph.getNodeById(link.origin_id) : null;
  }
  return null;
}

function limit(node) {
  const names = LIMITED[node.comfyClass ?? node.type];
  if (!names) return;
  const seconds = limits[modelChoice(node)];
  for (const widget of node.widgets ?? []) {
    if (!names.includes(widget.name)) continue;
    if (!staticMax.has(widget)) staticMax.set(widget, widget.options?.max);
    const max = seconds ?? staticMax.get(widget);
    if (max == null) continue;
    widget.options.max = Math.floor(max * 10) / 10; // the widgets step in 0.1 s
    if (widget.value > widget.options.max) widget.value = widget.options.max;
  }
}

let pending = null;
function limitAll() {
  if (pending) return;
  pending = setTimeout(() => {
    pending = null;
    for (const node of app.graph?._nodes ?? []) limit(node);
    app.graph?.setDirtyCanvas(true, false);
  }, 0);
}

app.registerExtension({
  name: "StableAudio3.DurationLimits",
  async setup() {
    try {
      const response = await api.fetchApi("/sa3/max_durations");
      if (response.ok) limits = await response.json();
    } catch (e) {
      console.warn("Stable Audio 3: no model duration limits", e);
    }
    limitAll();
  },
  nodeCreated(node) {
    const type = node.comfyClass ?? node.type;
    const choice = node.widgets?.find((w) => w.name === LOADERS[type]);
    if (choice) {
      const callback = choice.callback;
      choice.callback = function () {
        const result = callback?.apply(this, arguments);
        limitAll();
        return result;
      };
    }
    if (type in LOADERS || PASS_THROUGH.has(type) || type in LIMITED) {
      const changed = node.onConnectionsChange;
      node.onConnectionsChange = function () {
        const result = changed?.apply(this, arguments);
        limitAll();
        return result;
      };
    }
  },
  async afterConfigureGraph() {
    limitAll();
  },
});
