"""Queue an API-format workflow on a running ComfyUI, follow its progress, download the audio.

    python -m sa3.comfy_run "example_workflows/api/01 Text to audio.json" --server 127.0.0.1:8188 \\
        --set prompt="warm analog pad" --set seed=42 -o out/

``--set name=value`` sets every input called ``name``; ``--set 6.name=value`` only node 6's.
Values are parsed as JSON when they can be (numbers, true/false, lists), else kept as text.
Progress comes from ComfyUI's websocket (``websocket-client``, as in ComfyUI's own API examples);
if the websocket cannot be opened, or websocket-client is not installed (a plain Python: this
module needs nothing else outside the standard library), the runner polls ``/history`` instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

try:
    import websocket  # websocket-client: live progress
except ImportError:  # a plain Python: the runner polls /history instead (no live progress)
    websocket = None


class ComfyError(RuntimeError):
    """A failure to report to the user (no traceback)."""


# --- workflow edits --------------------------------------------------------------------------


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: dict, overrides: list[str]) -> dict:
    """Apply ``name=value`` / ``node.name=value`` to an API-format prompt (a copy)."""
    prompt = json.loads(json.dumps(prompt))
    for item in overrides:
        if "=" not in item:
            raise ComfyError(f"--set {item!r}: expected name=value or node_id.name=value.")
        key, raw = item.split("=", 1)
        node_id, _, name = key.rpartition(".")
        value = parse_value(raw)
        targets = [node_id] if node_id else [n for n, node in prompt.items() if name in node.get("inputs", {})]
        if node_id and node_id not in prompt:
            raise ComfyError(f"--set {item!r}: the workflow has no node {node_id!r} (nodes: {sorted(prompt)}).")
        if not targets or (node_id and name not in prompt[node_id].get("inputs", {})):
            raise ComfyError(f"--set {item!r}: no node of the workflow has an input named {name!r}.")
        for n in targets:
            if isinstance(prompt[n]["inputs"][name], list):
                raise ComfyError(f"--set {item!r}: input {name!r} of node {n} is a link, not a value.")
            prompt[n]["inputs"][name] = value
    return prompt


def load_workflow(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ComfyError(f"cannot read workflow {str(path)!r}: {e}") from e
    if "nodes" in data and "links" in data:
        raise ComfyError(f"{str(path)!r} is a UI-format workflow; use the API-format file (example_workflows/api/).")
    if not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise ComfyError(f"{str(path)!r} is not an API-format workflow (node id -> {{class_type, inputs}}).")
    return data


# --- HTTP ------------------------------------------------------------------------------------


class ComfyClient:
    def __init__(self, server: str, timeout: float = 30.0):
        self.server = server if "://" in server else f"http://{server}"
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                detail = json.loads(payload)
            except json.JSONDecodeError:
                detail = payload.decode(errors="replace")
            message = format_rejection(detail) if isinstance(detail, dict) else f"HTTP {e.code}: {detail}"
            raise ComfyError(message) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            raise ComfyError(f"cannot reach ComfyUI at {self.server} ({getattr(e, 'reason', e)}). Is it running? "
                             "Start it with `python main.py --listen 127.0.0.1` or pass --server HOST:PORT.") from None

    def queue(self, prompt: dict) -> str:
        reply = json.loads(self._request("/prompt", {"prompt": prompt, "client_id": self.client_id}))
        return reply["prompt_id"]

    def history(self, prompt_id: str) -> dict:
        return json.loads(self._request(f"/history/{prompt_id}")).get(prompt_id, {})

    def download(self, entry: dict) -> bytes:
        query = urllib.parse.urlencode({k: entry.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request(f"/view?{query}")


def format_rejection(detail: dict) -> str:
    """ComfyUI's validation answer (error + node_errors) as readable lines."""
    err = detail.get("error", {})
    lines = [f"ComfyUI rejected the workflow: {err.get('message', err) if isinstance(err, dict) else err}"]
    if isinstance(err, dict) and err.get("details"):
        lines.append(f"  {err['details']}")
    for node_id, node in (detail.get("node_errors") or {}).items():
        for e in node.get("errors", []):
            lines.append(f"  node {node_id} ({node.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return "\n".join(lines)


# --- run -------------------------------------------------------------------------------------


# refused, closed, bad handshake, timeout, or websocket-client missing
WEBSOCKET_ERRORS = (OSError,) if websocket is None else (OSError, websocket.WebSocketException)


def open_websocket(client: ComfyClient, timeout: float) -> websocket.WebSocket:
    """Connect before queueing: a prompt whose outputs are all cached finishes at once, and its
    messages would be gone before a later connection."""
    if websocket is None:
        raise OSError("websocket-client is not installed: following the prompt through /history")
    url = client.server.replace("http", "ws", 1) + f"/ws?clientId={client.client_id}"
    return websocket.create_connection(url, timeout=timeout)


def wait_with_websocket(ws: websocket.WebSocket, prompt_id: str, out=sys.stderr) -> None:
    """Print progress until the prompt's end message; closes ``ws``. Binary messages (preview
    images) are skipped; the client answers pings and joins fragmented messages itself."""
    try:
        while True:
            opcode, payload = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError("websocket closed before the prompt finished")
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            msg = json.loads(payload)
            data = msg.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = msg.get("type")
            if kind == "executing" and data.get("node") is not None:
                out.write(f"\nnode {data['node']} running")
            elif kind == "progress":
                out.write(f"\rnode {data.get('node')}: {data['value']}/{data['max']}   ")
            elif kind == "execution_error":
                raise ComfyError(f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                                 f"{data.get('exception_type')}: {data.get('exception_message')}")
            elif kind == "execution_interrupted":
                raise ComfyError("the prompt was interrupted")
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None):
                out.write("\n")
                return
            out.flush()
    finally:
        ws.close()


def wait_with_polling(client: ComfyClient, prompt_id: str, timeout: float = 3600, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.history(prompt_id).get("status", {})
        if status.get("completed") or status.get("status_str") in ("success", "error"):
            return
        time.sleep(interval)
    raise ComfyError(f"the prompt did not finish within {timeout:.0f} s")


def output_path(output_dir: Path, filename) -> Path:
    """Where a server-named output is saved: ``output_dir / filename`` for a plain file name only.

    The name comes from the server, so it is not trusted: a name with a folder part (``../x.flac``,
    ``sub/x.flac``, ``C:\\x``), an absolute path, ``.``/``..``, a control character, or an existing
    symbolic link in ``output_dir`` would write outside ``-o`` and is refused."""
    name = filename if isinstance(filename, str) else ""
    plain = (name not in ("", ".", "..") and not any(c in name for c in "/\\:") and name.isprintable()
             and name == name.strip())
    path = output_dir / name
    if plain and not path.is_symlink() and path.resolve().parent == output_dir.resolve():
        return path
    raise ComfyError(f"the server returned an unsafe output file name {filename!r} (expected a plain file name "
                     f"to save inside {str(output_dir)!r}); nothing was saved.")


def run(workflow: Path, server: str, overrides: list[str], output_dir: Path, timeout: float = 3600,
        out=sys.stderr) -> list[Path]:
    prompt = apply_overrides(load_workflow(workflow), overrides)
    client = ComfyClient(server)
    try:
        ws = open_websocket(client, timeout)
    except WEBSOCKET_ERRORS:  # no websocket (proxy, old server): the history polling below still works
        ws = None
    try:
        prompt_id = client.queue(prompt)
    except BaseException:  # rejected graph or unreachable server: do not leave the socket open
        if ws is not None:
            ws.close()
        raise
    out.write(f"queued {prompt_id} on {client.server}\n")
    if ws is not None:
        try:
            wait_with_websocket(ws, prompt_id, out=out)
        except WEBSOCKET_ERRORS:  # the connection dropped: the history polling below still works
            pass
    wait_with_polling(client, prompt_id, timeout=timeout)  # the history is written just after the last ws message
    entry = client.history(prompt_id)
    status = entry.get("status", {})
    if status.get("status_str") == "error":
        errors = [m[1] for m in status.get("messages", []) if m[0] == "execution_error"]
        detail = errors[0] if errors else {}
        raise ComfyError(f"node {detail.get('node_id')} ({detail.get('node_type')}) failed: "
                         f"{detail.get('exception_message', 'see the ComfyUI log')}")
    items = [item for node_output in entry.get("outputs", {}).values() for item in node_output.get("audio", [])]
    paths = [output_path(output_dir, item.get("filename")) for item in items]  # all checked before any write
    output_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for item, path in zip(items, paths, strict=True):
        path.write_bytes(client.download(item))
        saved.append(path)
        out.write(f"saved {path}\n")
    if not saved:
        out.write("the workflow produced no audio output (add a SaveAudio or PreviewAudio node)\n")
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sa3.comfy_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (example_workflows/api/*.json)")
    parser.add_argument("--server", default="127.0.0.1:8188", help="ComfyUI address HOST:PORT")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[NODE.]NAME=VALUE")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("."), help="where to save the audio")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the result")
    args = parser.parse_args(argv)
    try:
        run(args.workflow, args.server, args.overrides, args.output_dir, args.timeout)
    except ComfyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
