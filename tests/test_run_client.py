"""The headless runner against a small fake ComfyUI on loopback (HTTP + websocket), plus the
workflow override rules. The real-server run lives in tests/nodes (needs COMFYUI_PATH)."""

import asyncio
import io
import json
import socket
import sys
import threading
from typing import ClassVar

import pytest
from aiohttp import WSMsgType, web

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import file_module

client = file_module.load("workflows/run.py")

PROMPT = {
    "1": {"class_type": "SA3TextEncode", "inputs": {"prompt": "a", "duration": 1.0, "model": ["2", 0]}},
    "3": {"class_type": "SA3Sampler", "inputs": {"seed": 0, "steps": 8}},
    "9": {"class_type": "SaveAudio", "inputs": {"filename_prefix": "x", "audio": ["3", 0]}},
}


class FakeComfy:
    """ComfyUI's HTTP + websocket surface, served by aiohttp (ComfyUI's own server library)."""

    websocket = True  # serve /ws
    finish = True  # send the end-of-prompt message (else close the socket early)
    answers: ClassVar[dict] = {}  # route -> raw body to answer instead ("/prompt", "/history")
    endless = False  # /view streams without end
    filenames: ClassVar[tuple] = ("x_00001_.flac",)  # what the server names its outputs
    history: ClassVar[dict] = {}
    requests: ClassVar[list] = []  # "ws" / "queue" / "pong", in arrival order

    @classmethod
    def reset(cls, websocket: bool = True, finish: bool = True) -> None:
        cls.websocket, cls.finish, cls.history, cls.requests = websocket, finish, {}, []
        cls.filenames = ["x_00001_.flac"]
        cls.answers, cls.endless = {}, False

    @classmethod
    async def queue(cls, request: web.Request) -> web.Response:
        cls.requests.append("queue")
        prompt = (await request.json())["prompt"]
        if prompt["3"]["inputs"]["steps"] > 100:
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation",
                                                "message": "Prompt outputs failed validation"},
                                      "node_errors": {"3": {"class_type": "SA3Sampler", "errors": [
                                          {"message": "Value bigger than max", "details": "steps: 500 > 100"}]}}},
                                     status=400)
        failed = prompt["1"]["inputs"]["prompt"] == "fail"
        cls.history = {"p1": {
            "status": {"status_str": "error" if failed else "success", "completed": not failed,
                       "messages": [["execution_error", {"node_id": "3", "node_type": "SA3Sampler",
                                                         "exception_message": "boom"}]] if failed else []},
            "outputs": {} if failed else {"9": {"audio": [{"filename": name, "subfolder": "audio", "type": "output"}
                                                           for name in FakeComfy.filenames]}},
        }}
        if "/prompt" in cls.answers:
            return web.Response(body=cls.answers["/prompt"], content_type="application/json")
        return web.json_response({"prompt_id": "p1", "number": 0, "node_errors": {}})

    @classmethod
    async def ws(cls, request: web.Request) -> web.StreamResponse:
        cls.requests.append("ws")
        if not cls.websocket:
            return web.json_response({}, status=404)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.ping()  # the client must answer while it reads
        await ws.send_str(json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}))
        await ws.send_str(json.dumps({"type": "executing", "data": {"node": "3", "prompt_id": "p1"}}))
        await ws.send_bytes(b"\x00\x00\x00\x01" + b"\x89PNG" + bytes(70000))  # a preview image: skipped
        await ws.send_str(json.dumps({"type": "progress", "data": {"value": 4, "max": 8, "node": "3",
                                                                   "prompt_id": "p1", "pad": "x" * 70000}}))
        await ws.send_str(json.dumps({"type": "progress", "data": {"value": 1, "max": 2, "node": "5",
                                                                   "prompt_id": "other"}}))
        if cls.finish:
            await ws.send_str(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": "p1"}}))
        msg = await ws.receive(timeout=5)
        if msg.type == WSMsgType.PONG:
            cls.requests.append("pong")
        await ws.close()
        return ws

    @classmethod
    async def history_of(cls, request: web.Request) -> web.Response:
        if "/history" in cls.answers:
            return web.Response(body=cls.answers["/history"], content_type="application/json")
        return web.json_response(cls.history)

    @classmethod
    async def view(cls, request: web.Request) -> web.StreamResponse:
        if not cls.endless:
            return web.Response(body=b"fLaC-fake")
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(10_000):  # bounded here too: 10 GB would be "endless" for the client
                await response.write(bytes(1 << 20))
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response


@pytest.fixture
def server():
    """FakeComfy on 127.0.0.1 (a free port), in a thread with its own event loop."""
    app = web.Application()
    app.add_routes([web.post("/prompt", FakeComfy.queue), web.get("/ws", FakeComfy.ws),
                    web.get("/history/{prompt_id}", FakeComfy.history_of), web.get("/view", FakeComfy.view)])
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    FakeComfy.reset()
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@pytest.fixture
def workflow(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(PROMPT))
    return path


@pytest.mark.parametrize("websocket", [True, False])
def test_run_downloads_audio(server, workflow, tmp_path, websocket):
    FakeComfy.reset(websocket=websocket)
    log = io.StringIO()
    saved = client.run(workflow, server, ["prompt=techno", "3.seed=7"], tmp_path / "out", timeout=10, out=log)
    assert [p.name for p in saved] == ["x_00001_.flac"]
    assert saved[0].read_bytes() == b"fLaC-fake"
    # the websocket connects before queueing: a fully cached prompt ends at once (real-server test
    # in tests/test_workflows_e2e.py), and its end message must not be missed
    assert FakeComfy.requests[:2] == ["ws", "queue"]
    if websocket:
        assert FakeComfy.requests[2:] == ["pong"]  # the server's ping was answered
        assert "node 3 running" in log.getvalue() and "node 3: 4/8" in log.getvalue()
        assert "node 5" not in log.getvalue()  # another prompt's progress is not shown


def test_without_websocket_client_the_runner_polls(server, workflow, tmp_path, monkeypatch):
    """A plain Python without websocket-client: no live progress, the same files."""
    monkeypatch.setattr(client, "websocket", None)
    saved = client.run(workflow, server, [], tmp_path / "out", timeout=10, out=io.StringIO())
    assert [p.name for p in saved] == ["x_00001_.flac"]
    assert "ws" not in FakeComfy.requests


def test_websocket_closed_early_falls_back_to_polling(server, workflow, tmp_path):
    FakeComfy.reset(finish=False)
    saved = client.run(workflow, server, [], tmp_path / "out", timeout=10, out=io.StringIO())
    assert [p.name for p in saved] == ["x_00001_.flac"]


def test_rejected_graph_prints_node_errors(server, workflow, tmp_path, capsys):
    rc = client.main([str(workflow), "--server", server, "--set", "steps=500", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "ComfyUI rejected the workflow: Prompt outputs failed validation" in err
    assert "node 3 (SA3Sampler): Value bigger than max: steps: 500 > 100" in err


def test_runtime_error_is_reported(server, workflow, tmp_path):
    FakeComfy.reset(websocket=False)
    with pytest.raises(client.ComfyError, match=r"node 3 \(SA3Sampler\) failed: boom"):
        client.run(workflow, server, ["prompt=fail"], tmp_path, timeout=5, out=io.StringIO())


def test_unreachable_server(workflow, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    rc = client.main([str(workflow), "--server", f"127.0.0.1:{port}", "-o", str(tmp_path)])
    assert rc == 2
    assert f"cannot reach ComfyUI at http://127.0.0.1:{port}" in capsys.readouterr().err


def test_overrides():
    out = client.apply_overrides(PROMPT, ["prompt=hello world", "duration=12.5", "3.seed=3"])
    assert out["1"]["inputs"]["prompt"] == "hello world" and out["1"]["inputs"]["duration"] == 12.5
    assert out["3"]["inputs"]["seed"] == 3 and PROMPT["3"]["inputs"]["seed"] == 0
    with pytest.raises(client.ComfyError, match="no node of the workflow has an input named 'cfg'"):
        client.apply_overrides(PROMPT, ["cfg=3"])
    with pytest.raises(client.ComfyError, match="the workflow has no node '7'"):
        client.apply_overrides(PROMPT, ["7.seed=1"])
    with pytest.raises(client.ComfyError, match="input 'model' of node 1 is a link"):
        client.apply_overrides(PROMPT, ["model=3"])


def test_ui_format_is_refused(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(client.ComfyError, match="UI-format workflow; use the API-format file"):
        client.load_workflow(path)


UNSAFE_NAMES = ["../x.flac", "../../etc/x.flac", "/tmp/x.flac", "/etc/passwd", "sub/x.flac", "sub\\x.flac",
                "..\\x.flac", "C:\\x.flac", "C:x.flac", "..", ".", "", "x\x00.flac", "x\n.flac", " x.flac",
                None, 7, ["x.flac"]]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_output_names_write_nothing(server, workflow, tmp_path, name):
    """A server-chosen name never writes outside -o, and a bad one saves nothing at all."""
    FakeComfy.websocket = False
    FakeComfy.filenames = ("good_00001_.flac", name)
    out_dir = tmp_path / "deep" / "out"
    try:
        with pytest.raises(client.ComfyError, match=r"unsafe output file name .*nothing was saved"):
            client.run(workflow, server, [], out_dir, timeout=5, out=io.StringIO())
    finally:
        FakeComfy.filenames = ("x_00001_.flac",)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["wf.json"]


def test_symlink_in_output_dir_is_not_followed(server, workflow, tmp_path):
    out_dir, outside = tmp_path / "out", tmp_path / "outside.flac"
    out_dir.mkdir()
    (out_dir / "x_00001_.flac").symlink_to(outside)
    FakeComfy.websocket = False
    with pytest.raises(client.ComfyError, match=r"unsafe output file name 'x_00001_\.flac'"):
        client.run(workflow, server, [], out_dir, timeout=5, out=io.StringIO())
    assert not outside.exists()


def test_output_names_with_dots_stay_inside(server, workflow, tmp_path):
    FakeComfy.websocket = False
    FakeComfy.filenames = ("a..b_00001_.flac", "..x.flac")
    try:
        saved = client.run(workflow, server, [], tmp_path / "out", timeout=5, out=io.StringIO())
    finally:
        FakeComfy.filenames = ("x_00001_.flac",)
    assert [p.relative_to(tmp_path).as_posix() for p in saved] == ["out/a..b_00001_.flac", "out/..x.flac"]



@pytest.mark.parametrize("route, body, message", [
    ("/prompt", b"<html>proxy</html>", "the server answered /prompt with something that is not JSON"),
    ("/prompt", b"[1, 2]", "the server answered /prompt with list JSON (expected an object)"),
    ("/prompt", b'{"number": 0}', "the server answered /prompt without a prompt id"),
    ("/history", b"null", "the server answered /history/p1 with NoneType JSON"),
    ("/history", b'{"p1": []}', "the server answered /history/p1 with list JSON"),
    ("/history", b'{"p1": {"status": {"completed": true}, "outputs": [1]}}', "the prompt's outputs with list JSON"),
])
def test_malformed_answers_are_one_line_errors(server, workflow, tmp_path, capsys, route, body, message):
    FakeComfy.reset(websocket=False)
    FakeComfy.answers = {route: body}
    rc = client.main([str(workflow), "--server", server, "-o", str(tmp_path / "out"), "--timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_an_endless_download_is_stopped_and_leaves_nothing(server, workflow, tmp_path, monkeypatch):
    """Downloads stream to disk with a bound, never into memory; the partial file is removed."""
    FakeComfy.reset(websocket=False)
    FakeComfy.endless = True
    monkeypatch.setattr(client, "MAX_DOWNLOAD_BYTES", 8 << 20)
    with pytest.raises(client.ComfyError, match=r"answer to /view is larger than 8,388,608 bytes; stopped"):
        client.run(workflow, server, [], tmp_path / "out", timeout=5, out=io.StringIO())
    assert list((tmp_path / "out").iterdir()) == []


def test_over_long_server_names_are_refused(server, workflow, tmp_path):
    FakeComfy.reset(websocket=False)
    FakeComfy.filenames = ("x" * 300 + ".flac",)
    with pytest.raises(client.ComfyError, match="unsafe output file name"):
        client.run(workflow, server, [], tmp_path / "out", timeout=5, out=io.StringIO())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{}", "is not UTF-8 text (byte 0xff at offset 0)"),
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "is not an API-format workflow"),
    (b"{}", "is not an API-format workflow"),
    (b'{"1": {"class_type": "X", "inputs": []}}', "is not an API-format workflow"),
    (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    (json.dumps({"1": {"class_type": "A", "inputs": {"x": ["2", 0]}},
                 "2": {"class_type": "B", "inputs": {"y": ["1", 0]}}}).encode(), "node 1 depends on itself"),
    (json.dumps({"1": {"class_type": "A", "inputs": {"x": ["1", 0]}}}).encode(), "node 1 depends on itself"),
])
def test_bad_workflow_files_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "wf.json"
    path.write_bytes(content)
    rc = client.main([str(path), "--server", "127.0.0.1:9", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err


def test_huge_workflow_files_are_not_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(client, "MAX_WORKFLOW_BYTES", 1000)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "A", "inputs": {"text": "x" * 2000}}}))
    with pytest.raises(client.ComfyError, match="is larger than 0 MiB: not an API-format workflow"):
        client.load_workflow(path)


def test_a_long_chain_is_no_cycle(tmp_path):
    chain = {str(i): {"class_type": "A", "inputs": {"x": [str(i - 1), 0]} if i else {}} for i in range(20_000)}
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(chain))
    assert client.load_workflow(path) == chain


@pytest.mark.parametrize("item", ["=3", "seed", ".seed=1", "3.=1"])
def test_bad_set_syntax(item):
    with pytest.raises(client.ComfyError, match=r"expected name=value or node_id\.name=value"):
        client.apply_overrides(PROMPT, [item])


def test_output_naming_a_file_is_refused_before_queueing(server, workflow, tmp_path, capsys):
    FakeComfy.reset(websocket=False)
    target = tmp_path / "song.flac"
    target.write_bytes(b"keep")
    rc = client.main([str(workflow), "--server", server, "-o", str(target)])
    assert rc == 2 and "is a file; give a folder" in capsys.readouterr().err
    assert FakeComfy.requests == [] and target.read_bytes() == b"keep"
