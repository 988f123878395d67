"""Every rigtune_* metric that the Grafana dashboard and the alert rules query
is served on /metrics by a rigtuned that ran a real (CPU) job."""
import json
import os
import re

import yaml

from conftest import SOURCE, http_json, http_text

# Names in PromQL; "$rigtune_job" is a dashboard variable, not a metric.
METRIC = re.compile(r"(?<![$\w])rigtune_[a-z0-9_]+\b")
# Series that only a GPU rank or NVML reports; without GPUs they must still
# be declared (# HELP / # TYPE), see Note [Declared empty families].
NVML = {"rigtune_gpu_memory_used_bytes", "rigtune_gpu_memory_total_bytes",
        "rigtune_gpu_utilization_ratio", "rigtune_gpu_power_watts",
        "rigtune_gpu_temperature_celsius"}
GPU_ONLY = {"rigtune_gpu_memory_peak_bytes"} | NVML
# Sampled once the job reports a checkpoint; declared before that.
AFTER_CHECKPOINT = {"rigtune_checkpoint_timestamp_seconds"}
# Sampled only for jobs with validation data (the demo job has none).
VALIDATION_ONLY = {"rigtune_job_validation_loss"}


def queried_names():
    names = set()
    dashboard = json.load(open(os.path.join(SOURCE, "deploy", "grafana", "rigtune-dashboard.json")))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            names |= set(METRIC.findall(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        names |= set(METRIC.findall(variable.get("definition", "")))
    rules = yaml.safe_load(open(os.path.join(SOURCE, "deploy", "prometheus", "rigtune_rules.yml")))
    for group in rules["groups"]:
        for rule in group["rules"]:
            names |= set(METRIC.findall(rule["expr"]))
    return names


def test_queries_name_metrics():
    names = queried_names()
    assert {"rigtune_jobs", "rigtune_job_train_loss", "rigtune_gpu_memory_peak_bytes"} <= names
    assert NVML <= names, f"the dashboard does not chart {sorted(NVML - names)}"


def test_gpu_memory_alert_is_a_ratio_to_the_cards_capacity():
    rules = yaml.safe_load(open(os.path.join(SOURCE, "deploy", "prometheus", "rigtune_rules.yml")))
    alert = next(rule for group in rules["groups"] for rule in group["rules"]
                 if rule.get("alert") == "RigtuneGpuMemoryNearCap")
    expr = " ".join(alert["expr"].split())
    assert "rigtune_gpu_memory_used_bytes / rigtune_gpu_memory_total_bytes >" in expr, expr
    assert "1024" not in expr, f"a fixed byte threshold: {expr}"


def test_every_queried_metric_is_served(daemon, demo_model):
    job_id = daemon.submit_demo_job(demo_model, max_steps=4)
    assert daemon.wait_terminal(job_id)["state"] == "SUCCEEDED"
    checkpointed = bool(http_json(f"{daemon.http}/v1/jobs/{job_id}/checkpoints")
                        .get("checkpoints"))
    text = http_text(f"{daemon.http}/metrics")
    sampled = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    for name in sorted(queried_names()):
        if (name in GPU_ONLY or name in VALIDATION_ONLY or
                (name in AFTER_CHECKPOINT and not checkpointed)):
            assert name in declared, f"{name} is not declared on /metrics"
        else:
            assert name in sampled, f"{name} has no sample on /metrics after a job:\n{text}"
    assert f'rigtune_job_train_loss{{job="{job_id}"}}' in text
    if checkpointed:
        assert f'rigtune_checkpoint_timestamp_seconds{{job="{job_id}"}}' in text
