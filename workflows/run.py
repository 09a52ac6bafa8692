"""Queue an API-format workflow on a running ComfyUI, follow its progress, download the audio.

    python workflows/run.py "workflows/api/01 Text to audio.json" --server 127.0.0.1:8188 \\
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


MAX_WORKFLOW_BYTES = 16 << 20  # an API workflow is a few kB; a bigger file is not one
MAX_REPLY_BYTES = 64 << 20  # a JSON answer of the server (/prompt, /history)
MAX_DOWNLOAD_BYTES = 4 << 30  # one audio file: 380 s of 32-bit stereo WAV is 134 MB
MAX_NAME_BYTES = 255  # the longest file name common file systems take
CHUNK = 1 << 20


class ComfyError(RuntimeError):
    """A failure to report to the user (no traceback)."""


def _object(value, what: str) -> dict:
    """``value`` when it is a JSON object, else the error that the server answered something else."""
    if not isinstance(value, dict):
        raise ComfyError(f"the server answered {what} with {type(value).__name__} JSON (expected an object); is "
                         "this a ComfyUI server?")
    return value


def _json(payload: bytes, what: str) -> dict:
    try:
        return _object(json.loads(payload), what)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ComfyError(f"the server answered {what} with something that is not JSON ({payload[:60]!r}); is this a "
                         "ComfyUI server?") from None


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
        key, sep, raw = item.partition("=")
        node_id, _, name = key.rpartition(".")
        if not sep or not name.strip() or (key.count(".") and not node_id):
            raise ComfyError(f"--set {item!r}: expected name=value or node_id.name=value.")
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
    """An API-format workflow file, checked: UTF-8 JSON of at most ``MAX_WORKFLOW_BYTES``, an object of
    nodes ``{class_type, inputs}`` whose links point at nodes of the file and form no cycle."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_WORKFLOW_BYTES + 1)
    except OSError as e:
        raise ComfyError(f"cannot read workflow {str(path)!r}: {e.strerror or e}") from None
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise ComfyError(f"{str(path)!r} is larger than {MAX_WORKFLOW_BYTES >> 20} MiB: not an API-format workflow.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ComfyError(f"{str(path)!r} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}).") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ComfyError(f"{str(path)!r} is not valid JSON ({e}).") from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise ComfyError(f"{str(path)!r} is a UI-format workflow; use the API-format file (workflows/api/).")
    if not (isinstance(data, dict) and data and all(isinstance(v, dict) and isinstance(v.get("class_type"), str)
                                                    and isinstance(v.get("inputs", {}), dict) for v in data.values())):
        raise ComfyError(f"{str(path)!r} is not an API-format workflow (node id -> {{class_type, inputs}}).")
    _check_links(data, path)
    return data


def _links(node: dict) -> list[str]:
    """Node ids of this workflow that this node's inputs are linked to (``[node_id, output_index]``)."""
    return [str(v[0]) for v in node.get("inputs", {}).values()
            if isinstance(v, list) and len(v) == 2 and isinstance(v[1], int) and isinstance(v[0], (str, int))]


def _check_links(prompt: dict, path: Path) -> None:
    """No node depends on itself through its links (a cycle); links to missing nodes are ComfyUI's
    to report, with the node's name."""
    done: set[str] = set()
    for start in prompt:  # iterative depth-first search: a deep chain cannot exhaust the stack
        if start in done:
            continue
        path_ids, stack = {start}, [(start, iter(_links(prompt[start])))]
        while stack:
            node_id, pending = stack[-1]
            target = next(pending, None)
            if target is None:
                stack.pop()
                path_ids.discard(node_id)
                done.add(node_id)
            elif target in path_ids:
                raise ComfyError(f"{str(path)!r}: node {target} depends on itself through its links (a cycle).")
            elif target not in done and target in prompt:
                path_ids.add(target)
                stack.append((target, iter(_links(prompt[target]))))


# --- HTTP ------------------------------------------------------------------------------------


class ComfyClient:
    def __init__(self, server: str, timeout: float = 30.0):
        self.server = server if "://" in server else f"http://{server}"
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, path: str, body: dict | None = None, into=None, limit: int = MAX_REPLY_BYTES):
        """The answer's bytes (at most ``limit``), or, with ``into`` (a binary file), streamed there."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _read_bounded(resp, path, limit, into)
        except urllib.error.HTTPError as e:
            payload = e.read(MAX_REPLY_BYTES)
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
        reply = _json(self._request("/prompt", {"prompt": prompt, "client_id": self.client_id}), "/prompt")
        prompt_id = reply.get("prompt_id")
        if not isinstance(prompt_id, str) or not prompt_id:
            raise ComfyError(f"the server answered /prompt without a prompt id (got {str(reply)[:80]}).")
        return prompt_id

    def history(self, prompt_id: str) -> dict:
        what = f"/history/{prompt_id}"
        return _object(_json(self._request(what), what).get(prompt_id, {}), what)

    def download(self, entry: dict, into) -> int:
        """Stream one output file into the open binary file ``into``; returns its size."""
        query = urllib.parse.urlencode({k: str(entry.get(k, "")) for k in ("filename", "subfolder", "type")})
        return self._request(f"/view?{query}", into=into, limit=MAX_DOWNLOAD_BYTES)


def _read_bounded(resp, path: str, limit: int, into=None):
    """Read an HTTP answer in chunks, refusing one longer than ``limit`` bytes (an endless or huge
    answer must not fill memory or the disk)."""
    total, parts = 0, []
    while chunk := resp.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise ComfyError(f"the server's answer to {path.split('?')[0]} is larger than {limit:,} bytes; stopped.")
        if into is None:
            parts.append(chunk)
        else:
            into.write(chunk)
    return total if into is not None else b"".join(parts)


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
            try:
                msg = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                continue  # not a ComfyUI status message
            data = msg.get("data") if isinstance(msg, dict) else None
            if not isinstance(data, dict):
                continue
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            kind = msg.get("type")
            if kind == "executing" and data.get("node") is not None:
                out.write(f"\nnode {data['node']} running")
            elif kind == "progress":
                out.write(f"\rnode {data.get('node')}: {data.get('value')}/{data.get('max')}   ")
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
        if isinstance(status, dict) and (status.get("completed") or status.get("status_str") in ("success", "error")):
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
             and name == name.strip() and len(name.encode("utf-8", "replace")) <= MAX_NAME_BYTES)
    path = output_dir / name
    if plain and not path.is_symlink() and path.resolve().parent == output_dir.resolve():
        return path
    raise ComfyError(f"the server returned an unsafe output file name {filename!r} (expected a plain file name "
                     f"to save inside {str(output_dir)!r}); nothing was saved.")


def run(workflow: Path, server: str, overrides: list[str], output_dir: Path, timeout: float = 3600,
        out=sys.stderr) -> list[Path]:
    if output_dir.exists() and not output_dir.is_dir():
        raise ComfyError(f"-o {str(output_dir)!r} is a file; give a folder to save the audio in.")
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
    status = _object(entry.get("status", {}), "the prompt's status")
    if status.get("status_str") == "error":
        errors = [m[1] for m in status.get("messages", []) if isinstance(m, list) and len(m) == 2
                  and m[0] == "execution_error" and isinstance(m[1], dict)]
        detail = errors[0] if errors else {}
        raise ComfyError(f"node {detail.get('node_id')} ({detail.get('node_type')}) failed: "
                         f"{detail.get('exception_message', 'see the ComfyUI log')}")
    outputs = _object(entry.get("outputs", {}), "the prompt's outputs")
    items = [item for node_output in outputs.values() if isinstance(node_output, dict)
             for item in node_output.get("audio", []) if isinstance(item, dict)]
    paths = [output_path(output_dir, item.get("filename")) for item in items]  # all checked before any write
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        return [_save(client, item, path, out) for item, path in zip(items, paths, strict=True)] or _nothing(out)
    except OSError as e:
        raise ComfyError(f"cannot save into {str(output_dir)!r}: {e.strerror or e}") from None


def _save(client: ComfyClient, item: dict, path: Path, out) -> Path:
    """Download one output next to ``path`` and move it there once whole: a failed or refused
    download leaves no partial file."""
    partial = path.with_name(path.name[:MAX_NAME_BYTES - 9] + ".partial")
    try:
        with open(partial, "wb") as f:
            client.download(item, f)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    out.write(f"saved {path}\n")
    return path


def _nothing(out) -> list[Path]:
    out.write("the workflow produced no audio output (add a SaveAudio or PreviewAudio node)\n")
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python workflows/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path, help="API-format workflow JSON (workflows/api/*.json)")
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
