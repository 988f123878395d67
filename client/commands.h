// The rigtune subcommands. Each returns the process exit code (ExitCode in
// connection.h) and prints proto3 JSON instead of text when `json` is set.
#ifndef RIGTUNE_CLIENT_COMMANDS_H_
#define RIGTUNE_CLIENT_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/connection.h"
#include "nlohmann/json.hpp"

namespace rigtune::client {

struct SubmitOptions {
  std::string job_file;                // YAML or JSON JobSpec; may be empty
  std::vector<std::string> overrides;  // key.path=value
  std::string model;
  std::string dataset;
  std::string output_dir;
  int gpus = -1;  // -1: from the file / the daemon's default
  int priority = 0;
  bool priority_set = false;
  int64_t max_steps = -1;
  std::vector<std::string> labels;  // key=value
  std::string idempotency_key;
  bool watch = false;
};

struct ListOptions {
  std::string state;  // e.g. RUNNING
  std::string label;  // key=value
  int limit = 50;     // jobs to show, newest first
};

// `rigtune merge|export`: runs `rigtune-worker merge`, which links LibTorch.
struct MergeOptions {
  std::string base;
  std::string adapter;
  std::string out;
  bool quantize_nf4 = false;
  double max_shard_gb = 5.0;
  std::string worker_binary;  // empty: beside rigtune, or ../worker/rigtune-worker
};

// `rigtune plan`: the job's memory plan per GPU, computed here without a
// daemon. Exit 0 when it fits (or no capacity is known), 1 when it does not,
// 2 for a bad job file or model.
struct PlanOptions {
  SubmitOptions job;          // the job file, --set and the submit flags
  double gpu_memory_gib = 0;  // the card; 0: only dist.max_gpu_memory_gib
};

// The job file with the flags applied and paths made absolute, as JSON
// (field names as in the .proto); not yet checked against JobSpec.
absl::StatusOr<nlohmann::json> BuildSpecJson(const SubmitOptions& options);

int Submit(Connection& connection, const SubmitOptions& options, bool json);
int Plan(const PlanOptions& options, bool json);
int List(Connection& connection, const ListOptions& options, bool json);
int Show(Connection& connection, const std::string& id, bool json);
// Follows the job to its end (or PAUSED); the exit code is its outcome.
int Watch(Connection& connection, const std::string& id, int64_t after_seq, bool json);
int Logs(Connection& connection, const std::string& id, bool follow, bool json);
// verb: cancel | pause | resume
int Control(Connection& connection, const std::string& verb, const std::string& id,
            const std::string& reason, bool json);
int Checkpoints(Connection& connection, const std::string& id, bool json);
int Health(Connection& connection, bool json);
// Prints one progress line per tensor; the exit code is the worker's.
int Merge(const MergeOptions& options);

}  // namespace rigtune::client

#endif  // RIGTUNE_CLIENT_COMMANDS_H_
