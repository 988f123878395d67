// fsdp_rank_tool: one rank of a training job, for the multi-process FSDP
// tests. Runs RunJob with the job file and the torchrun variables of its
// environment, and (rank 0) writes the loss of every step to LOSSES.json.
// Validation results (with validation data) go to the same file.
// With STOP_AFTER > 0, should_stop() asks the run to stop (and checkpoint)
// once that many steps ran in this process, as a pause would.
//
//   RANK=0 WORLD_SIZE=2 MASTER_PORT=... fsdp_rank_tool JOB.json LOSSES.json [STOP_AFTER]
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "nlohmann/json.hpp"
#include "worker/train/run_job.h"

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::cerr << "usage: fsdp_rank_tool JOB.json LOSSES.json [STOP_AFTER]\n";
    return 2;
  }
  auto config = rigtune::train::LoadJobConfig(argv[1]);
  if (!config.ok()) {
    std::cerr << config.status() << "\n";
    return 2;
  }
  std::vector<double> losses;
  rigtune::train::RunCallbacks cb;
  cb.on_log = [](const std::string& line) { std::cerr << line << "\n"; };
  cb.on_step = [&](const rigtune::train::StepMetrics& m) {
    losses.push_back(m.loss);
    std::cerr << "step " << m.step << " loss " << m.loss << "\n";
  };
  nlohmann::json validation = nlohmann::json::array();
  cb.on_validation = [&](const rigtune::train::ValidationMetrics& v) {
    validation.push_back({{"step", v.step}, {"loss", v.loss}, {"perplexity", v.perplexity},
                          {"tokens", v.tokens}});
    std::cerr << "validation step " << v.step << " loss " << v.loss << "\n";
  };
  const size_t stop_after = argc == 4 ? std::strtoul(argv[3], nullptr, 10) : 0;
  cb.should_stop = [&] { return stop_after > 0 && losses.size() >= stop_after; };
  auto result = rigtune::train::RunJob(*config, cb);
  if (!result.ok()) {
    std::cerr << "error: " << result.status().message() << "\n";
    return 1;
  }
  std::ofstream(argv[2]) << nlohmann::json{{"losses", losses}, {"validation", validation}}.dump();
  return 0;
}
