// ServiceMetrics: the daemon's Prometheus metrics, served as text on the
// HTTP port's /metrics (prometheus-cpp registry + TextSerializer; no
// separate exposer port).
//
//   rigtune_jobs{state}                       jobs per state (gauge)
//   rigtune_queue_depth                       QUEUED jobs
//   rigtune_job_train_loss{job}               latest loss of a job
//   rigtune_job_learning_rate{job}
//   rigtune_job_tokens_per_second{job}
//   rigtune_job_step_seconds{job}
//   rigtune_job_validation_loss{job}          latest validation loss of a job
//   rigtune_checkpoint_timestamp_seconds{job} unix time of the latest checkpoint
//   rigtune_train_tokens_total                tokens trained, all jobs
//   rigtune_train_steps_total                 optimizer steps, all jobs
//   rigtune_gpu_memory_peak_bytes{gpu}        allocator peak of the rank on that GPU
//   rigtune_worker_restarts_total             relaunches after worker failures
//   rigtune_build_info{version}               always 1
//
// rigtune_jobs and rigtune_queue_depth are read from the job store at
// scrape time, and so are the NVML gauges (gpu_monitor.h):
//
//   rigtune_gpu_memory_used_bytes{gpu,name}   device memory in use (all processes)
//   rigtune_gpu_memory_total_bytes{gpu,name}  the card's capacity
//   rigtune_gpu_utilization_ratio{gpu,name}   busy fraction of the last sample period, 0..1
//   rigtune_gpu_power_watts{gpu,name}         board power draw
//   rigtune_gpu_temperature_celsius{gpu,name} core temperature
//
// Per-job series are kept for the 20 most recently finished jobs and every
// unfinished one, which bounds the label cardinality. Thread-safe.
#ifndef RIGTUNE_SERVER_METRICS_H_
#define RIGTUNE_SERVER_METRICS_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "rigtune/v1/job_service.pb.h"
#include "server/gpu_monitor.h"

namespace rigtune::server {

class ServiceMetrics {
 public:
  explicit ServiceMetrics(const std::string& version);

  // Prometheus text exposition format of every metric, after running the
  // scrape hooks.
  std::string Serialize();

  // `hook` runs on every Serialize(), on the scraping thread, before the
  // metrics are collected: it sets gauges whose truth lives elsewhere (the
  // job store, NVML), so a scrape never reports a stale or initial value.
  void AddScrapeHook(std::function<void()> hook);

  void SetJobCounts(const std::map<rigtune::v1::Job::State, int>& counts);
  void SetQueueDepth(int depth);
  // Replaces the per-GPU gauges with `samples` (none: no series).
  void SetGpuSamples(const std::vector<GpuSample>& samples);
  // A step report of `job_id` from the rank on `gpu` (-1: CPU rank). Only
  // rank 0's report feeds the per-job and total series.
  void OnStep(const std::string& job_id, int gpu, const rigtune::v1::StepMetrics& metrics);
  void OnCheckpoint(const std::string& job_id, double unix_seconds);
  // A validation report (rank 0's).
  void OnValidation(const std::string& job_id, const rigtune::v1::ValidationMetrics& validation);
  void OnWorkerRestart();
  // The job reached a terminal state; its series may be dropped later.
  void OnJobFinished(const std::string& job_id);

 private:
  struct JobSeries {
    prometheus::Gauge* loss = nullptr;
    prometheus::Gauge* learning_rate = nullptr;
    prometheus::Gauge* tokens_per_second = nullptr;
    prometheus::Gauge* step_seconds = nullptr;
    prometheus::Gauge* checkpoint_time = nullptr;
    prometheus::Gauge* validation_loss = nullptr;  // once the job reported one
  };
  JobSeries& SeriesLocked(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Help text of the families that may have no series yet; declared before
  // the families so that their initializers can fill it.
  std::map<std::string, std::string> help_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>& jobs_;
  prometheus::Gauge& queue_depth_;
  prometheus::Family<prometheus::Gauge>& loss_;
  prometheus::Family<prometheus::Gauge>& learning_rate_;
  prometheus::Family<prometheus::Gauge>& tokens_per_second_;
  prometheus::Family<prometheus::Gauge>& step_seconds_;
  prometheus::Family<prometheus::Gauge>& checkpoint_time_;
  prometheus::Family<prometheus::Gauge>& validation_loss_;
  prometheus::Family<prometheus::Gauge>& gpu_memory_peak_;
  struct GpuFamilies {
    prometheus::Family<prometheus::Gauge>* memory_used;
    prometheus::Family<prometheus::Gauge>* memory_total;
    prometheus::Family<prometheus::Gauge>* utilization;
    prometheus::Family<prometheus::Gauge>* power;
    prometheus::Family<prometheus::Gauge>* temperature;
  };
  GpuFamilies gpu_;
  prometheus::Counter& tokens_total_;
  prometheus::Counter& steps_total_;
  prometheus::Counter& restarts_total_;

  absl::Mutex mu_;
  std::map<std::string, JobSeries> series_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> scrape_hooks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<prometheus::Family<prometheus::Gauge>*, prometheus::Gauge*>> gpu_series_
      ABSL_GUARDED_BY(mu_);
  std::deque<std::string> finished_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rigtune::server

#endif  // RIGTUNE_SERVER_METRICS_H_
