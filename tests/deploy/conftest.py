"""Fixtures for the live deploy tests: the demo base model, a rigtuned on
ephemeral loopback ports with the real worker, and a finished demo job.

Binaries and the source tree come from the environment ctest sets
(tests/deploy/CMakeLists.txt): RIGTUNED, RIGTUNE_CLI, RIGTUNE_WORKER,
RIGTUNE_SOURCE_DIR.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

SOURCE = os.environ.get("RIGTUNE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def env_path(name):
    path = os.environ.get(name)
    if not path or not os.path.exists(path):
        pytest.fail(f"{name} must name a built binary (got {path!r}); run through ctest")
    return path


def http_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def http_text(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return reply.read().decode()


class Daemon:
    """rigtuned with --gpus none on 127.0.0.1:0, stopped by stop()."""

    def __init__(self, root, model_dir):
        self.root = root
        self.state = os.path.join(root, "state")
        port_file = os.path.join(root, "ports.json")
        self.log = open(os.path.join(root, "rigtuned.log"), "w")
        self.proc = subprocess.Popen(
            [env_path("RIGTUNED"), "--state-dir", self.state, "--gpus", "none",
             "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
             "--port-file", port_file, "--worker-binary", env_path("RIGTUNE_WORKER"),
             "--model-root", model_dir, "--data-root", os.path.join(SOURCE, "deploy", "demo"),
             "--output-root", root],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("rigtuned did not start: " + self.log_text())
            time.sleep(0.1)
        ports = json.load(open(port_file))
        self.grpc = f"127.0.0.1:{ports['grpc_port']}"
        self.http = f"http://127.0.0.1:{ports['http_port']}"

    def log_text(self):
        self.log.flush()
        return open(self.log.name).read()

    def cli(self, *args):
        done = subprocess.run([env_path("RIGTUNE_CLI"), "--server", self.grpc, *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def submit_demo_job(self, model_dir, max_steps):
        out = self.cli("submit", os.path.join(SOURCE, "deploy", "demo", "job.yaml"),
                       "--model", model_dir,
                       "--dataset", os.path.join(SOURCE, "deploy", "demo", "alpaca_demo.jsonl"),
                       "--output-dir", os.path.join(self.root, "out"), "--gpus", "0",
                       "--set", f"train.max_steps={max_steps}",
                       "--set", "checkpoint.every_steps=2", "--json")
        return json.loads(out)["id"]

    def wait_terminal(self, job_id, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = http_json(f"{self.http}/v1/jobs/{job_id}")
            if job["state"] in TERMINAL:
                return job
            time.sleep(0.5)
        pytest.fail(f"job {job_id} did not finish in {timeout}s: " + self.log_text())

    def reported_losses(self, job_id):
        """The loss of every metrics event of the job, in order."""
        events = http_json(f"{self.http}/v1/jobs/{job_id}/events?page_size=1000")["events"]
        return [e["metrics"].get("loss", 0.0) for e in events if "metrics" in e]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model"))
    subprocess.run([sys.executable, os.path.join(SOURCE, "deploy", "demo", "make_demo_model.py"),
                    out], check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture
def daemon(tmp_path, demo_model):
    rig = Daemon(str(tmp_path), demo_model)
    yield rig
    rig.stop()
