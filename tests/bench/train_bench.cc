// train_bench: tokens/s and peak memory of the QLoRA training step.
//
//   train_bench --model random:llama2-7b --batch 4 --seq 2048 --steps 6 [--r 64]
//               [--no-checkpointing] [--dtype bf16] [--device cuda]
//               [--sharding full_shard] [--cpu-offload] [--activation-offload]
//               [--offload-optimizer] [--max-gpu-memory-gib 22] [--backend auto|nccl|gloo]
//               [--recompute full|keep_mlp|auto] [--profile]
//
// RunJob refuses a configuration the memory planner says cannot fit its
// card (the plan is logged first); RIGTUNE_IGNORE_MEMORY_PLAN=1 runs it anyway.
//
// Runs RunJob on synthetic tokens (so FSDP applies when launched with RANK /
// WORLD_SIZE / MASTER_PORT per process). The first step is a warm-up and is
// left out of the averages; the program exits after the last step, without
// the final checkpoint and adapter export. Prints one markdown table row (under FSDP, one
// per rank, its ranks column reading "2 (rank 1)"):
//   | model | ranks | batch x seq | ckpt | offload | tok/s/GPU | step s | peak alloc GiB | peak reserved GiB | load s | peak host RSS GiB |
// (ckpt: "on", or "on, keep_mlp" / "on, auto" with that --recompute.)
// (load s: from start to the end of the first step, less that step: model
// loading or quantization, and data setup.)
// --profile adds, after the row, a table of where the measured steps' time
// went, phase by phase (CUDA events; see worker/profile/step_profiler.h).
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/train/device_memory.h"
#include "worker/profile/step_profiler.h"
#include "worker/train/run_job.h"

namespace {

const char* Arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

bool Flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (Flag(argc, argv, "--help")) {
    std::cout << "usage: train_bench --model random:<shape> [--batch N] [--seq N] [--steps N] "
                 "[--r N] [--no-checkpointing] [--dtype bf16|fp32] [--device cuda|cpu] "
                 "[--sharding S] [--cpu-offload] [--activation-offload] [--offload-optimizer] "
                 "[--max-gpu-memory-gib G] [--backend auto|nccl|gloo] [--mlp-chunk-tokens N] "
                 "[--base nf4|bf16|hqq4] [--method lora|dora|full|llama_pro] [--expand-every K] "
                 "[--recompute full|keep_mlp|auto] [--profile]\n"
                 "  --mlp-chunk-tokens N  rows of the row-tiled MLP (0: automatic)\n"
                 "  --base, --method  train.base and train.method (the model column then\n"
                 "             names them, e.g. random:llama2-7b bf16/dora)\n"
                 "  --expand-every K  train.expand_every (llama_pro)\n"
                 "  --recompute P  train.recompute (default full here, auto in a job file):\n"
                 "             keep_mlp keeps the MLP's gate/up products from the forward and\n"
                 "             skips the MLP's GEMMs in the recompute (the ckpt column names it)\n"
                 "  --profile  also print the time per phase of the measured steps (GPU time from\n"
                 "             CUDA events: dequantize, base GEMMs, LoRA, attention, norms/RoPE/\n"
                 "             SwiGLU/residual, loss, optimizer; recompute envelopes)\n";
    return 0;
  }
  rigtune::train::JobConfig c;
  c.model = Arg(argc, argv, "--model", "random:small");
  c.output_dir = Arg(argc, argv, "--out", "/tmp/rigtune-train-bench");
  c.train.batch_size = std::atoll(Arg(argc, argv, "--batch", "4"));
  c.train.context_length = std::atoll(Arg(argc, argv, "--seq", "2048"));
  c.train.max_steps = std::atoll(Arg(argc, argv, "--steps", "6"));
  c.train.activation_checkpointing = !Flag(argc, argv, "--no-checkpointing");
  c.train.dtype = Arg(argc, argv, "--dtype", "bf16");
  c.train.mlp_chunk_tokens = std::atoll(Arg(argc, argv, "--mlp-chunk-tokens", "0"));
  c.train.device = Arg(argc, argv, "--device", "auto");
  c.lora.r = std::atoll(Arg(argc, argv, "--r", "64"));
  c.train.base = Arg(argc, argv, "--base", "nf4");
  c.train.method = Arg(argc, argv, "--method", "lora");
  c.train.expand_every = std::atoll(Arg(argc, argv, "--expand-every", "0"));
  // Full recompute unless asked: rows stay comparable with earlier ones.
  c.train.recompute = Arg(argc, argv, "--recompute", "full");
  c.lora.alpha = 16;
  c.optim.schedule = "constant";
  c.optim.lr = 1e-4;
  c.dist.sharding = Arg(argc, argv, "--sharding", "full_shard");
  c.dist.cpu_offload = Flag(argc, argv, "--cpu-offload");
  c.dist.activation_offload = Flag(argc, argv, "--activation-offload");
  c.dist.offload_optimizer = Flag(argc, argv, "--offload-optimizer");
  c.dist.backend = Arg(argc, argv, "--backend", "auto");
  c.dist.max_gpu_memory_gib = std::atof(Arg(argc, argv, "--max-gpu-memory-gib", "0"));
  const int world = std::atoi(std::getenv("WORLD_SIZE") ? std::getenv("WORLD_SIZE") : "1");
  const int rank = std::atoi(std::getenv("RANK") ? std::getenv("RANK") : "0");
  const bool profile = Flag(argc, argv, "--profile");
  auto& profiler = rigtune::profile::StepProfiler::Get();
  rigtune::profile::StepProfiler::SetEnabled(profile);

  const auto start = std::chrono::steady_clock::now();
  double seconds = 0, tokens = 0, load_seconds = 0;
  int64_t peak = 0, reserved = 0, measured = 0;
  auto print_row = [&] {
    if (measured == 0) return;
    const std::string ranks = world == 1 ? "1" : absl::StrFormat("%d (rank %d)", world, rank);
    std::string offload = c.dist.cpu_offload ? (c.dist.activation_offload ? "weights+act" : "weights")
                                             : (c.dist.activation_offload ? "act" : "off");
    if (c.dist.offload_optimizer) offload += "+optim";
    const std::string model = c.train.base == "nf4" && c.train.method == "lora"
                                  ? c.model
                                  : absl::StrCat(c.model, " ", c.train.base, "/", c.train.method);
    std::string ckpt = c.train.activation_checkpointing ? "on" : "off";
    if (c.train.activation_checkpointing && c.train.recompute != "full") {
      ckpt += ", " + c.train.recompute;
    }
    std::cout << absl::StrFormat(
        "| %s | %s | %d x %d | %s | %s | %.0f | %.3f | %.2f | %.2f | %.1f | %.2f |\n", model,
        ranks, c.train.batch_size, c.train.context_length, ckpt, offload,
        tokens / seconds / world, seconds / measured,  // m.tokens counts every rank
        peak / double(1 << 30), reserved / double(1 << 30), load_seconds,
        rigtune::train::PeakHostRssBytes() / double(1 << 30));
    if (profile) {
      std::cout << absl::StrFormat("\nTime per phase, %s, %d x %d, ckpt %s, offload %s, mean of "
                                   "%d steps:\n\n",
                                   c.model, c.train.batch_size, c.train.context_length, ckpt,
                                   offload, measured)
                << profiler.Table(1000.0 * seconds / measured, measured) << "\n";
    }
    std::cout.flush();
  };
  rigtune::train::RunCallbacks cb;
  cb.on_log = [&](const std::string& line) { std::cerr << "[rank " << rank << "] " << line << "\n"; };
  cb.on_step = [&](const rigtune::train::StepMetrics& m) {
    std::cerr << absl::StrFormat("[rank %d] step %d/%d loss %.4f %.0f tok/s %.2f s peak %.2f GiB "
                                 "reserved %.2f GiB\n",
                                 rank, m.step, m.total_steps, m.loss, m.tokens_per_second,
                                 m.step_seconds, m.gpu_memory_peak_bytes / double(1 << 30),
                                 m.gpu_memory_reserved_bytes / double(1 << 30));
    if (profile && !profiler.Collect()) std::cerr << "profile: reading CUDA events failed\n";
    if (m.step == 1) profiler.Reset();  // the warm-up step is not measured
    if (m.step == 1) {
      load_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() -
          m.step_seconds;
    }
    peak = std::max(peak, m.gpu_memory_peak_bytes);
    reserved = std::max(reserved, m.gpu_memory_reserved_bytes);
    if (m.step > 1) {  // the first step is a warm-up
      seconds += m.step_seconds;
      tokens += m.tokens;
      ++measured;
    }
    // The final checkpoint and adapter export are not part of the step being
    // measured (for a 70B model they move ~14 GB): every rank leaves here,
    // after its last step, where no collective is pending.
    if (m.step == m.total_steps) {
      print_row();
      std::cerr.flush();
      std::_Exit(0);
    }
  };
  auto result = rigtune::train::RunJob(c, cb);
  if (!result.ok()) {
    std::cerr << "rank " << rank << ": " << result.status().message() << "\n";
    return 1;
  }
  print_row();
  return 0;
}
