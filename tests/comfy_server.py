"""A real ComfyUI server for the end-to-end tests.

Needs a ComfyUI checkout (0.3.64 or newer): ``COMFYUI_PATH=/path/to/ComfyUI`` and, when ComfyUI
lives in another virtual environment, ``COMFYUI_PYTHON=/path/to/venv/bin/python``; tests marked
with ``requires_comfyui`` (tests/conftest.py) are skipped otherwise. No pytest here:
``bench/gpu_check.py`` starts servers on a GPU machine with it. The server runs on the CPU (unless
given other device arguments) on a free loopback
port (``COMFYUI_E2E_PORT`` to choose one) with a temporary base directory (``--base-directory``:
models, custom_nodes, input, output, temp, user), so nothing installed in that ComfyUI is seen;
it loads only this checkout as a custom node pack and finds the test models through
``--extra-model-paths-config``. Nothing in the ComfyUI checkout is changed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

from tests.golden_io import REPO

COMFYUI = os.environ.get("COMFYUI_PATH")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
PACK_NAME = "sa3_e2e_pack"  # the checkout's name in the temporary custom_nodes folder
START_TIMEOUT = 180

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """``main.py --cpu`` with this pack only; ``model_folders`` maps ComfyUI folder names
    (``stable_audio_3``, ``loras``) to directories. ``comfyui`` / ``python`` default to
    ``COMFYUI_PATH`` / ``COMFYUI_PYTHON``; ``device_args`` replace ``--cpu`` (``[]``: ComfyUI's own
    device choice, ``["--novram"]``: its partial loading on the GPU)."""

    def __init__(self, root: Path, model_folders: dict[str, Path], *, comfyui: str | Path | None = None,
                 python: str | None = None, device_args: Sequence[str] = ("--cpu",)):
        self.root = root
        self.comfyui = Path(comfyui or COMFYUI)
        self.python = python or PYTHON
        self.device_args = list(device_args)
        self.dirs = {name: root / name for name in ("input", "output", "temp", "user", "custom_nodes")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        (self.dirs["custom_nodes"] / PACK_NAME).symlink_to(REPO, target_is_directory=True)
        folders = {"custom_nodes": self.dirs["custom_nodes"], **model_folders}
        self.config = root / "extra_model_paths.yaml"
        self.config.write_text("sa3_e2e:\n" + "".join(f"    {k}: {Path(v).resolve()}\n" for k, v in folders.items()))
        self.port = int(os.environ.get("COMFYUI_E2E_PORT", 0)) or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log_path = root / "comfyui.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> ComfyServer:
        cmd = [self.python, "main.py", *self.device_args, "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.root),
               "--extra-model-paths-config", str(self.config), "--disable-all-custom-nodes",
               "--whitelist-custom-nodes", PACK_NAME, "--database-url", "sqlite:///:memory:",
               "--input-directory", str(self.dirs["input"]), "--output-directory", str(self.dirs["output"]),
               "--temp-directory", str(self.dirs["temp"]), "--user-directory", str(self.dirs["user"])]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise RuntimeError(f"ComfyUI did not answer within {START_TIMEOUT} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
            return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue ``prompt`` and return its history entry once it succeeded or failed."""
        return self.wait(self.queue(prompt), timeout)

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        """``POST /prompt`` (for ``client_id``'s websocket, if given); the prompt id."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        assert status == 200, body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """The history entry of ``prompt_id`` once it succeeded or failed (interrupted: failed)."""
        end = time.time() + timeout
        while time.time() < end:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry["status"].get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.25)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
