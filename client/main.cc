// rigtune: the command-line client of rigtuned.
//
//   rigtune submit job.yaml --set train.max_steps=100 --watch
//   rigtune list --state RUNNING
//   rigtune watch job-1a2b3c4d          # live loss, tok/s, progress bar, ETA
//   rigtune logs -f job-1a2b3c4d
//   rigtune pause|resume|cancel job-1a2b3c4d
//   rigtune checkpoints job-1a2b3c4d
//   rigtune health
//   rigtune plan job.yaml --gpu-memory-gib 24 [--json]   (no daemon needed)
//   rigtune merge --base DIR --adapter DIR --out DIR [--quantize-nf4]   (alias: export)
//
// Server: --server, else $RIGTUNE_SERVER, else the config file's `server`,
// else 127.0.0.1:50051. Token: $RIGTUNE_TOKEN, else the config file's
// `token`. Config file: $RIGTUNE_CONFIG, else ~/.config/rigtune/config.yaml.
// TLS: --tls or an https:// server address (config: `tls: true`), checked
// against --ca-file (config `ca_file`; default: the system's CAs); mutual
// TLS with --cert-file/--key-file (config `cert_file`, `key_file`).
// Every read command takes --json (one JSON document per line).
//
// Exit codes: 0 ok (watch: SUCCEEDED), 1 error, 2 usage, 3 daemon
// unavailable, 4 no such job, 5 invalid request, 6 not allowed in the job's
// state, 7 unauthenticated, 10 job FAILED, 11 job CANCELLED, 12 job PAUSED.
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "CLI/CLI.hpp"
#include "client/commands.h"
#include "client/connection.h"
#include "yaml-cpp/yaml.h"

namespace {

using rigtune::client::ConnectionOptions;

// Fills server/token from the config file, then the environment.
void LoadDefaults(ConnectionOptions& options) {
  std::string path;
  if (const char* env = std::getenv("RIGTUNE_CONFIG")) {
    path = env;
  } else if (const char* home = std::getenv("HOME")) {
    path = std::string(home) + "/.config/rigtune/config.yaml";
  }
  std::error_code error;
  if (!path.empty() && std::filesystem::exists(path, error)) {
    try {
      YAML::Node config = YAML::LoadFile(path);
      if (config["server"]) options.server = config["server"].as<std::string>();
      if (config["token"]) options.token = config["token"].as<std::string>();
      if (config["tls"]) options.tls = config["tls"].as<bool>();
      for (auto [key, field] : {std::pair{"ca_file", &options.ca_file},
                                std::pair{"cert_file", &options.cert_file},
                                std::pair{"key_file", &options.key_file}}) {
        if (config[key]) *field = config[key].as<std::string>();
      }
    } catch (const YAML::Exception& e) {
      std::fprintf(stderr, "rigtune: ignoring %s: %s\n", path.c_str(), e.what());
    }
  }
  if (const char* env = std::getenv("RIGTUNE_SERVER")) options.server = env;
  if (const char* env = std::getenv("RIGTUNE_TOKEN")) options.token = env;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("rigtune: submit, watch and control fine-tuning jobs on rigtuned", "rigtune");
  app.require_subcommand(1);
  ConnectionOptions connection_options;
  LoadDefaults(connection_options);
  bool json = false;
  app.add_option("--server", connection_options.server,
                 "rigtuned's gRPC address (https://host:port: TLS)")
      ->capture_default_str();
  app.add_flag("--tls", connection_options.tls, "speak TLS to the server");
  app.add_option("--ca-file", connection_options.ca_file,
                 "PEM CA that signed the server's certificate (default: the system's)");
  app.add_option("--cert-file", connection_options.cert_file,
                 "PEM client certificate, when the server asks for one (mutual TLS)");
  app.add_option("--key-file", connection_options.key_file, "PEM key of --cert-file");
  app.add_option("--timeout", connection_options.timeout_seconds, "seconds per call")
      ->capture_default_str();
  app.add_flag("--json", json, "print proto3 JSON")->configurable();

  // The job file and the flags that edit it, for submit and plan.
  auto add_job_flags = [](CLI::App* cmd, rigtune::client::SubmitOptions& job) {
    cmd->add_option("job_file", job.job_file, "JobSpec as YAML or JSON");
    cmd->add_option("--set", job.overrides, "override a field: train.max_steps=100");
    cmd->add_option("--model", job.model, "model folder or random:<shape>");
    cmd->add_option("--dataset", job.dataset, "dataset file");
    cmd->add_option("--output-dir", job.output_dir, "where the adapter goes");
    cmd->add_option("--gpus", job.gpus, "GPUs (0: CPU)")->check(CLI::Range(0, 1024));
    cmd->add_option("--max-steps", job.max_steps, "cap optimizer steps");
  };
  rigtune::client::SubmitOptions submit;
  CLI::App* submit_cmd = app.add_subcommand("submit", "submit a job from a YAML or JSON file");
  add_job_flags(submit_cmd, submit);
  submit_cmd->add_option("--priority", submit.priority, "higher starts first")
      ->each([&](const std::string&) { submit.priority_set = true; });
  submit_cmd->add_option("--label", submit.labels, "key=value (repeat)");
  submit_cmd->add_option("--idempotency-key", submit.idempotency_key,
                         "resubmitting with the same key returns the same job");
  submit_cmd->add_flag("--watch", submit.watch, "watch the job after submitting it");
  submit_cmd->add_flag("--json", json, "print proto3 JSON");

  rigtune::client::PlanOptions plan;
  CLI::App* plan_cmd = app.add_subcommand(
      "plan",
      "print a job's memory per GPU and host without running it; exit 1 if it cannot fit");
  add_job_flags(plan_cmd, plan.job);
  plan_cmd->add_option("--gpu-memory-gib", plan.gpu_memory_gib,
                       "plan for a card of this size, e.g. 24 (2 GiB of it kept for the CUDA "
                       "context); dist.max_gpu_memory_gib wins")
      ->check(CLI::Range(0.0, 4096.0));
  plan_cmd->add_flag("--json", json, "print the plan as JSON");

  rigtune::client::ListOptions list;
  CLI::App* list_cmd = app.add_subcommand("list", "list jobs, newest first");
  list_cmd->add_option("--state", list.state, "only jobs in this state, e.g. RUNNING");
  list_cmd->add_option("--label", list.label, "only jobs with this label key=value");
  list_cmd->add_option("--limit", list.limit, "at most this many jobs")->capture_default_str();
  list_cmd->add_flag("--json", json, "print proto3 JSON");

  std::string id;
  std::string reason;
  int64_t after_seq = 0;
  bool follow = false;
  auto with_id = [&](const char* name, const char* help) {
    CLI::App* cmd = app.add_subcommand(name, help);
    cmd->add_option("id", id, "job id")->required();
    cmd->add_flag("--json", json, "print proto3 JSON");
    return cmd;
  };
  CLI::App* show_cmd = with_id("show", "show one job");
  CLI::App* watch_cmd = with_id("watch", "follow a job live; exits with its outcome");
  watch_cmd->add_option("--after-seq", after_seq, "replay events after this one");
  CLI::App* logs_cmd = with_id("logs", "print a job's log lines and state changes");
  logs_cmd->add_flag("-f,--follow", follow, "keep printing until the job ends");
  CLI::App* cancel_cmd = with_id("cancel", "cancel a job");
  cancel_cmd->add_option("--reason", reason, "recorded with the job");
  CLI::App* pause_cmd = with_id("pause", "pause a job (it checkpoints first)");
  CLI::App* resume_cmd = with_id("resume", "requeue a paused job");
  CLI::App* checkpoints_cmd = with_id("checkpoints", "list a job's checkpoints");
  CLI::App* health_cmd = app.add_subcommand("health", "is rigtuned serving?");
  health_cmd->add_flag("--json", json, "print proto3 JSON");

  rigtune::client::MergeOptions merge;
  std::vector<CLI::App*> merge_cmds;
  for (const char* name : {"merge", "export"}) {
    CLI::App* cmd = app.add_subcommand(name, "merge an adapter into its base model (bf16 HF folder)");
    cmd->add_option("--base", merge.base, "base model folder")->required();
    cmd->add_option("--adapter", merge.adapter, "PEFT adapter folder")->required();
    cmd->add_option("--out", merge.out, "output folder (must not exist)")->required();
    cmd->add_flag("--quantize-nf4", merge.quantize_nf4, "write the merged linears in bnb-4bit");
    cmd->add_option("--max-shard-gb", merge.max_shard_gb, "largest shard, GB")
        ->capture_default_str();
    cmd->add_option("--worker-binary", merge.worker_binary, "the rigtune-worker to run");
    merge_cmds.push_back(cmd);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return rigtune::client::kExitUsage;
  }

  for (CLI::App* cmd : merge_cmds) {
    if (cmd->parsed()) return rigtune::client::Merge(merge);
  }
  if (plan_cmd->parsed()) return rigtune::client::Plan(plan, json);
  auto created = rigtune::client::Connection::Create(connection_options);
  if (!created.ok()) {
    std::fprintf(stderr, "rigtune: %s\n", std::string(created.status().message()).c_str());
    return rigtune::client::kExitUsage;
  }
  rigtune::client::Connection& connection = **created;
  if (submit_cmd->parsed()) return rigtune::client::Submit(connection, submit, json);
  if (list_cmd->parsed()) return rigtune::client::List(connection, list, json);
  if (show_cmd->parsed()) return rigtune::client::Show(connection, id, json);
  if (watch_cmd->parsed()) return rigtune::client::Watch(connection, id, after_seq, json);
  if (logs_cmd->parsed()) return rigtune::client::Logs(connection, id, follow, json);
  if (cancel_cmd->parsed()) return rigtune::client::Control(connection, "cancel", id, reason, json);
  if (pause_cmd->parsed()) return rigtune::client::Control(connection, "pause", id, reason, json);
  if (resume_cmd->parsed()) return rigtune::client::Control(connection, "resume", id, reason, json);
  if (checkpoints_cmd->parsed()) return rigtune::client::Checkpoints(connection, id, json);
  if (health_cmd->parsed()) return rigtune::client::Health(connection, json);
  return rigtune::client::kExitUsage;
}
