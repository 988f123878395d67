// rigtune-worker: trains one rank of one job.
//
//   rigtune-worker --job job.json                  standalone: progress on stdout
//   rigtune-worker --job job.json --coordinator 127.0.0.1:50051 --job-id job-1a2b3c4d
//   rigtune-worker merge --base DIR --adapter DIR --out DIR [--quantize-nf4] [--max-shard-gb N]
//
// The rank comes from the environment (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT), as rigtuned, torchrun, Slurm or Kubernetes set
// it. With a coordinator, metrics, log lines and checkpoints stream to it and
// its stop requests (pause, cancel, shutdown) end the run at the next step
// boundary with a checkpoint. SIGTERM and SIGINT do the same.
//
// Exit status: 0 the run finished or stopped cleanly on request; 1 the run
// failed in a way a relaunch may fix (a lost peer, out of memory, a crash
// in LibTorch); 2 the job cannot run as given (bad usage, job file, config,
// model or data: a relaunch fails the same way, so rigtuned does not retry);
// 3 the coordinator could not be reached or refused this rank.
//
// Note [Final reason line]: whatever ends the run with a non-zero status,
// the last line this process writes that starts with "rigtune-worker: " is
// its one-line reason. rigtuned reads it back from the rank's log into the
// job's error, also for failures before the coordinator link is up.
//
// Note [Two protobufs]: this file sees LibTorch (through the engine) but no
// generated protobuf code; the coordinator link hides it behind
// worker/coord/coordinator_link.h.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/coord/coordinator_link.h"
#include "worker/train/job_config.h"
#include "worker/train/merge.h"
#include "worker/train/run_job.h"

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitBadJob = 2;
constexpr int kExitNoCoordinator = 3;

std::atomic<bool> g_stop_signal{false};

void OnStopSignal(int) { g_stop_signal = true; }

// A status from a check of the job itself (config, model, data,
// checkpoint) fails again on every relaunch; anything else may not.
int ExitStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kPermissionDenied:
      return kExitBadJob;
    default:
      return kExitFailed;
  }
}

// The final reason line, see Note [Final reason line].
void PrintReason(const absl::Status& status) {
  std::fflush(stdout);
  std::fprintf(stderr, "rigtune-worker: %s\n", std::string(status.message()).c_str());
  std::fflush(stderr);
}

struct Args {
  std::string job_file;
  std::string coordinator;
  std::string job_id;
};

void Usage() {
  std::fprintf(stderr,
               "usage: rigtune-worker --job FILE [--coordinator HOST:PORT --job-id ID]\n"
               "       rigtune-worker merge --base DIR --adapter DIR --out DIR [--quantize-nf4]\n"
               "                            [--max-shard-gb N]\n"
               "  --job FILE          the job file (JSON, see worker/train/job_config.h)\n"
               "  --coordinator ADDR  rigtuned's gRPC address (default: $RIGTUNE_COORDINATOR)\n"
               "  --job-id ID         the job's id (default: the job file's, or $RIGTUNE_JOB_ID)\n");
}

absl::Status ParseArgs(int argc, char** argv, Args& args) {
  if (const char* env = std::getenv("RIGTUNE_COORDINATOR")) args.coordinator = env;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") return absl::CancelledError("help");
    if (i + 1 >= argc) return absl::InvalidArgumentError(flag + ": needs a value");
    if (flag == "--job") {
      args.job_file = argv[++i];
    } else if (flag == "--coordinator") {
      args.coordinator = argv[++i];
    } else if (flag == "--job-id") {
      args.job_id = argv[++i];
    } else {
      return absl::InvalidArgumentError("unknown flag " + flag);
    }
  }
  if (args.job_file.empty()) return absl::InvalidArgumentError("--job FILE is required");
  return absl::OkStatus();
}

// `rigtune-worker merge ...`: merges an adapter into its base model (merge.h),
// printing one line per tensor. Exit status 0, 1 (failed) or 2 (usage).
int Merge(int argc, char** argv) {
  rigtune::train::MergeOptions options;
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--quantize-nf4") {
      options.quantize_nf4 = true;
      continue;
    }
    if (i + 1 >= argc) break;
    if (flag == "--base") {
      options.base_dir = argv[++i];
    } else if (flag == "--adapter") {
      options.adapter_dir = argv[++i];
    } else if (flag == "--out") {
      options.out_dir = argv[++i];
    } else if (flag == "--max-shard-gb") {
      options.max_shard_bytes = static_cast<int64_t>(std::atof(argv[++i]) * 1e9);
    } else {
      std::fprintf(stderr, "rigtune-worker merge: unknown flag %s\n", flag.c_str());
      options.out_dir.clear();
      break;
    }
  }
  if (options.base_dir.empty() || options.adapter_dir.empty() || options.out_dir.empty() ||
      options.max_shard_bytes <= 0) {
    Usage();
    return 2;
  }
  options.on_tensor = [](const rigtune::train::MergeProgress& p) {
    std::printf("tensor %lld/%lld %s %s -> %s\n", static_cast<long long>(p.index),
                static_cast<long long>(p.total), p.name.c_str(), p.action.c_str(),
                p.shard.c_str());
    std::fflush(stdout);
  };
  if (absl::Status s = rigtune::train::MergeAdapter(options); !s.ok()) {
    std::fprintf(stderr, "rigtune-worker merge: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("merged model written to %s\n", options.out_dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "merge") == 0) return Merge(argc, argv);
  Args args;
  if (absl::Status parsed = ParseArgs(argc, argv, args); !parsed.ok()) {
    Usage();
    if (absl::IsCancelled(parsed)) return 0;
    PrintReason(parsed);
    return kExitBadJob;
  }
  struct sigaction action {};
  action.sa_handler = OnStopSignal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);

  absl::StatusOr<rigtune::train::JobConfig> config = rigtune::train::LoadJobConfig(args.job_file);
  if (!config.ok()) {
    PrintReason(config.status());
    return kExitBadJob;
  }
  rigtune::worker::LinkIdentity identity = rigtune::worker::LinkIdentityFromEnv();
  if (!args.job_id.empty()) config->job_id = args.job_id;
  if (config->job_id.empty()) config->job_id = identity.job_id;
  identity.job_id = config->job_id;
  const bool rank0 = identity.rank == 0;

  std::unique_ptr<rigtune::worker::CoordinatorLink> link;
  if (!args.coordinator.empty()) {
    const char* token = std::getenv("RIGTUNE_TOKEN");
    auto connected = rigtune::worker::CoordinatorLink::Connect(args.coordinator, identity,
                                                               token ? token : "");
    if (!connected.ok()) {
      PrintReason(connected.status());
      return kExitNoCoordinator;
    }
    link = *std::move(connected);
  }

  rigtune::train::RunCallbacks callbacks;
  callbacks.on_step = [&](const rigtune::train::StepMetrics& m) {
    if (rank0) {
      std::printf("step %lld/%lld  loss %.4f  lr %.3g  %.0f tok/s  %.2f s/step\n",
                  static_cast<long long>(m.step), static_cast<long long>(m.total_steps), m.loss,
                  m.learning_rate, m.tokens_per_second, m.step_seconds);
      std::fflush(stdout);
    }
    if (link) link->ReportStep(m);
  };
  callbacks.on_log = [&](const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (link) link->ReportLog(line);
  };
  callbacks.on_checkpoint = [&](const rigtune::train::CheckpointInfo& checkpoint) {
    std::printf("checkpoint step %lld -> %s\n", static_cast<long long>(checkpoint.step),
                checkpoint.path.c_str());
    std::fflush(stdout);
    if (link) {
      if (absl::Status s = link->ReportCheckpoint(checkpoint); !s.ok()) {
        std::fprintf(stderr, "rigtune-worker: %s\n", std::string(s.message()).c_str());
      }
    }
  };
  callbacks.on_validation = [&](const rigtune::train::ValidationMetrics& v) {
    if (!rank0) return;  // every rank computes the same numbers
    std::printf("validation step %lld  loss %.4f  perplexity %.3f  %lld tokens\n",
                static_cast<long long>(v.step), v.loss, v.perplexity,
                static_cast<long long>(v.tokens));
    std::fflush(stdout);
    if (link) link->ReportValidation(v);
  };
  callbacks.should_stop = [&] { return g_stop_signal.load() || (link && link->StopRequested()); };

  absl::StatusOr<rigtune::train::RunResult> result = rigtune::train::RunJob(*config, callbacks);
  if (result.ok()) {
    std::printf("%s after %lld steps, %lld tokens, final loss %.4f; %s%s\n",
                result->stopped_early ? "stopped" : "finished",
                static_cast<long long>(result->steps),
                static_cast<long long>(result->tokens_trained), result->final_loss,
                result->stopped_early ? "state in the latest checkpoint" : "adapter: ",
                result->adapter_path.c_str());
  }
  std::fflush(stdout);
  if (link) {
    if (absl::Status s = link->Finish(result); !s.ok()) {
      PrintReason(result.ok() ? s : result.status());
      return result.ok() ? kExitNoCoordinator : ExitStatusFor(result.status());
    }
  }
  if (result.ok()) return 0;
  PrintReason(result.status());
  return ExitStatusFor(result.status());
}
