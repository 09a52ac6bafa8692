// Stable Audio 3: SA3 Inpaint Regions shows the inputs of its mode only. regions mode reads the
// regions text; continuation reads keep_seconds and (older workflows) a latent to check keep_seconds
// against its duration. ComfyUI 0.3.64's node schema cannot say "show when" (no dynamic inputs in its
// V3 API), so the browser does it.
//
// The widgets of the other mode are hidden, not removed: their values still travel with the saved
// workflow and the queued prompt, where the node ignores them. The latent socket is removed while
// it is unconnected in regions mode and comes back in continuation mode; a connected one (an older
// workflow's) always stays.
import { app } from "../../../scripts/app.js"; // served as /extensions/<pack>/js/inpaint_modes.js

const NODE = "SA3InpaintMask";
const MODE_OF = { regions: "regions", keep_seconds: "continuation" }; // widget -> the mode that reads it
const SOCKET = "latent";
const SOCKET_MODE = "continuation";

const removed = new WeakMap(); // node -> its latent socket while it is removed (name, type, tooltip...)

function showModeInputs(node) {
  const mode = node.widgets?.find((w) => w.name === "mode")?.value;
  if (mode == null) return;
  for (const widget of node.widgets) {
    if (widget.name in MODE_OF) widget.hidden = MODE_OF[widget.name] !== mode;
  }
  const index = node.inputs?.findIndex((i) => i.name === SOCKET) ?? -1;
  if (mode !== SOCKET_MODE && index >= 0 && node.inputs[index].link == null) {
    const { name, type, link, ...extra } = node.inputs[index];
    removed.set(node, { name, type, extra });
    node.removeInput(index);
  } else if (mode === SOCKET_MODE && index < 0) {
    const { name, type, extra } = removed.get(node) ?? { name: SOCKET, type: "LATENT", extra: {} };
    node.addInput(name, type, extra);
  }
  const [width] = node.size ?? [0];
  const [, height] = node.computeSize?.() ?? [0, 0];
  node.setSize?.([width, height]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "StableAudio3.InpaintModes",
  nodeCreated(node) {
    if ((node.comfyClass ?? node.type) !== NODE) return;
    const mode = node.widgets?.find((w) => w.name === "mode");
    if (mode) {
      const callback = mode.callback;
      mode.callback = function () {
        const result = callback?.apply(this, arguments);
        showModeInputs(node);
        return result;
      };
    }
    const changed = node.onConnectionsChange;
    node.onConnectionsChange = function () {
      const result = changed?.apply(this, arguments);
      showModeInputs(node); // a latent disconnected in regions mode: its socket goes
      return result;
    };
    showModeInputs(node); // a new node: the default mode
  },
  loadedGraphNode(node) {
    if ((node.comfyClass ?? node.type) === NODE) showModeInputs(node); // the saved mode and links
  },
});
