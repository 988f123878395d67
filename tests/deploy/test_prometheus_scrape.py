"""A real Prometheus server (the Debian package) scrapes a rigtuned running a
job every second; PromQL returns the loss values the job reported."""
import math
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import SOURCE, http_json


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path, daemon):
    binary = os.environ.get("RIGTUNE_PROMETHEUS") or shutil.which("prometheus")
    assert binary, "prometheus not found; deploy/setup.sh installs the Debian package"
    target = daemon.http.removeprefix("http://")
    rules = os.path.join(SOURCE, "deploy", "prometheus", "rigtune_rules.yml")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{rules}']\n"
        "scrape_configs:\n"
        f"  - {{job_name: rigtune, static_configs: [{{targets: ['{target}']}}]}}\n")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    open(log.name).read()
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url, promql):
    reply = http_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_promql_loss_matches_reported_loss(daemon, prometheus, demo_model):
    wait_for(lambda: query(prometheus, 'up{job="rigtune"} == 1'), 30, "the first scrape")
    job_id = daemon.submit_demo_job(demo_model, max_steps=12)
    job = daemon.wait_terminal(job_id)
    assert job["state"] == "SUCCEEDED", job
    reported = daemon.reported_losses(job_id)
    assert len(reported) >= 12
    assert close(reported[-1], job["latest_metrics"]["loss"])

    selector = f'rigtune_job_train_loss{{exported_job="{job_id}"}}'
    latest = wait_for(lambda: [r for r in query(prometheus, selector)
                               if close(float(r["value"][1]), reported[-1])],
                      30, "a scrape of the final loss")
    assert latest[0]["metric"]["job"] == "rigtune"

    history = query(prometheus, f"{selector}[10m]")
    assert len(history) == 1
    scraped = [float(value) for _, value in history[0]["values"]]
    assert scraped, "no samples of the job's loss"
    for value in scraped:
        assert any(close(value, loss) for loss in reported), \
            f"Prometheus saw loss {value}, the job reported {reported}"
