"""The headless runner against a small fake ComfyUI on loopback (HTTP + websocket), plus the
workflow override rules. The real-server run lives in tests/nodes (needs COMFYUI_PATH)."""

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from sa3 import comfy_run

PROMPT = {
    "1": {"class_type": "SA3TextEncode", "inputs": {"prompt": "a", "duration": 1.0, "model": ["2", 0]}},
    "3": {"class_type": "SA3Sampler", "inputs": {"seed": 0, "steps": 8}},
    "9": {"class_type": "SaveAudio", "inputs": {"filename_prefix": "x", "audio": ["3", 0]}},
}


class FakeComfy(BaseHTTPRequestHandler):
    websocket = True
    filenames: ClassVar[list] = ["x_00001_.flac"]  # what the server names its outputs
    history: ClassVar[dict] = {}
    requests: ClassVar[list] = []  # "ws" / "queue", in arrival order

    def log_message(self, *args):
        pass

    def _json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        FakeComfy.requests.append("queue")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["prompt"]
        if prompt["3"]["inputs"]["steps"] > 100:
            return self._json(400, {"error": {"type": "prompt_outputs_failed_validation",
                                              "message": "Prompt outputs failed validation"},
                                    "node_errors": {"3": {"class_type": "SA3Sampler", "errors": [
                                        {"message": "Value bigger than max", "details": "steps: 500 > 100"}]}}})
        failed = prompt["1"]["inputs"]["prompt"] == "fail"
        FakeComfy.history = {"p1": {
            "status": {"status_str": "error" if failed else "success", "completed": not failed,
                       "messages": [["execution_error", {"node_id": "3", "node_type": "SA3Sampler",
                                                         "exception_message": "boom"}]] if failed else []},
            "outputs": {} if failed else {"9": {"audio": [{"filename": name, "subfolder": "audio", "type": "output"}
                                                           for name in FakeComfy.filenames]}},
        }}
        self._json(200, {"prompt_id": "p1", "number": 0, "node_errors": {}})

    def do_GET(self):
        if self.path.startswith("/ws"):
            FakeComfy.requests.append("ws")
            if not FakeComfy.websocket:
                return self._json(404, {})
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            for msg in ({"type": "executing", "data": {"node": "3", "prompt_id": "p1"}},
                        {"type": "progress", "data": {"value": 4, "max": 8, "node": "3", "prompt_id": "p1"}},
                        {"type": "executing", "data": {"node": None, "prompt_id": "p1"}}):
                payload = json.dumps(msg).encode()
                self.wfile.write(bytes([0x81, len(payload)]) + payload if len(payload) < 126 else
                                 bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload)
            self.wfile.flush()
            return
        if self.path.startswith("/history/"):
            return self._json(200, FakeComfy.history)
        if self.path.startswith("/view"):
            data = b"fLaC-fake"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(PROMPT))
    return path


@pytest.mark.parametrize("websocket", [True, False])
def test_run_downloads_audio(server, workflow, tmp_path, websocket):
    FakeComfy.websocket = websocket
    FakeComfy.requests = []
    log = io.StringIO()
    saved = comfy_run.run(workflow, server, ["prompt=techno", "3.seed=7"], tmp_path / "out", timeout=10, out=log)
    assert [p.name for p in saved] == ["x_00001_.flac"]
    assert saved[0].read_bytes() == b"fLaC-fake"
    # the websocket connects before queueing: a fully cached prompt ends at once (real-server test
    # in tests/test_workflows_e2e.py), and its end message must not be missed
    assert FakeComfy.requests[:2] == ["ws", "queue"]
    if websocket:
        assert "node 3: 4/8" in log.getvalue()


def test_rejected_graph_prints_node_errors(server, workflow, tmp_path, capsys):
    rc = comfy_run.main([str(workflow), "--server", server, "--set", "steps=500", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in err
    assert "node 3 (SA3Sampler): Value bigger than max: steps: 500 > 100" in err


def test_runtime_error_is_reported(server, workflow, tmp_path):
    FakeComfy.websocket = False
    with pytest.raises(comfy_run.ComfyError, match=r"node 3 \(SA3Sampler\) failed: boom"):
        comfy_run.run(workflow, server, ["prompt=fail"], tmp_path, timeout=5, out=io.StringIO())


def test_unreachable_server(workflow, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    rc = comfy_run.main([str(workflow), "--server", f"127.0.0.1:{port}", "-o", str(tmp_path)])
    assert rc == 2
    assert f"cannot reach ComfyUI at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_overrides():
    out = comfy_run.apply_overrides(PROMPT, ["prompt=hello world", "duration=12.5", "3.seed=3"])
    assert out["1"]["inputs"]["prompt"] == "hello world" and out["1"]["inputs"]["duration"] == 12.5
    assert out["3"]["inputs"]["seed"] == 3 and PROMPT["3"]["inputs"]["seed"] == 0
    with pytest.raises(comfy_run.ComfyError, match="no node of the workflow has an input named 'cfg'"):
        comfy_run.apply_overrides(PROMPT, ["cfg=3"])
    with pytest.raises(comfy_run.ComfyError, match="the workflow has no node '7'"):
        comfy_run.apply_overrides(PROMPT, ["7.seed=1"])
    with pytest.raises(comfy_run.ComfyError, match="input 'model' of node 1 is a link"):
        comfy_run.apply_overrides(PROMPT, ["model=3"])


def test_ui_format_is_refused(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(comfy_run.ComfyError, match="UI-format workflow; use the API-format file"):
        comfy_run.load_workflow(path)


UNSAFE_NAMES = ["../x.flac", "../../etc/x.flac", "/tmp/x.flac", "/etc/passwd", "sub/x.flac", "sub\\x.flac",
                "..\\x.flac", "C:\\x.flac", "C:x.flac", "..", ".", "", "x\x00.flac", "x\n.flac", " x.flac",
                None, 7, ["x.flac"]]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_output_names_write_nothing(server, workflow, tmp_path, name):
    """A server-chosen name never writes outside -o, and a bad one saves nothing at all."""
    FakeComfy.websocket = False
    FakeComfy.filenames = ["good_00001_.flac", name]
    out_dir = tmp_path / "deep" / "out"
    try:
        with pytest.raises(comfy_run.ComfyError, match=r"unsafe output file name .*nothing was saved"):
            comfy_run.run(workflow, server, [], out_dir, timeout=5, out=io.StringIO())
    finally:
        FakeComfy.filenames = ["x_00001_.flac"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["wf.json"]


def test_symlink_in_output_dir_is_not_followed(server, workflow, tmp_path):
    out_dir, outside = tmp_path / "out", tmp_path / "outside.flac"
    out_dir.mkdir()
    (out_dir / "x_00001_.flac").symlink_to(outside)
    FakeComfy.websocket = False
    with pytest.raises(comfy_run.ComfyError, match=r"unsafe output file name 'x_00001_\.flac'"):
        comfy_run.run(workflow, server, [], out_dir, timeout=5, out=io.StringIO())
    assert not outside.exists()


def test_output_names_with_dots_stay_inside(server, workflow, tmp_path):
    FakeComfy.websocket = False
    FakeComfy.filenames = ["a..b_00001_.flac", "..x.flac"]
    try:
        saved = comfy_run.run(workflow, server, [], tmp_path / "out", timeout=5, out=io.StringIO())
    finally:
        FakeComfy.filenames = ["x_00001_.flac"]
    assert [p.relative_to(tmp_path).as_posix() for p in saved] == ["out/a..b_00001_.flac", "out/..x.flac"]
