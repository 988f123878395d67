#include "server/metrics.h"

#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/job_state.h"

namespace rigtune::server {

namespace {

constexpr size_t kFinishedJobsKept = 20;

prometheus::Family<prometheus::Gauge>& Gauges(prometheus::Registry& registry,
                                              const std::string& name, const std::string& help,
                                              std::map<std::string, std::string>* helps = nullptr) {
  if (helps != nullptr) (*helps)[name] = help;
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry);
}

prometheus::Counter& Counter(prometheus::Registry& registry, const std::string& name,
                             const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

}  // namespace

ServiceMetrics::ServiceMetrics(const std::string& version)
    : registry_(std::make_shared<prometheus::Registry>()),
      jobs_(Gauges(*registry_, "rigtune_jobs", "Jobs by state.")),
      queue_depth_(Gauges(*registry_, "rigtune_queue_depth", "Jobs waiting in QUEUED.").Add({})),
      loss_(Gauges(*registry_, "rigtune_job_train_loss", "Latest training loss of a job.", &help_)),
      learning_rate_(Gauges(*registry_, "rigtune_job_learning_rate",
                            "Latest learning rate of a job.", &help_)),
      tokens_per_second_(Gauges(*registry_, "rigtune_job_tokens_per_second",
                                "Training throughput of a job's latest step, all ranks.", &help_)),
      step_seconds_(Gauges(*registry_, "rigtune_job_step_seconds",
                           "Wall time of a job's latest optimizer step.", &help_)),
      checkpoint_time_(Gauges(*registry_, "rigtune_checkpoint_timestamp_seconds",
                              "Unix time of a job's latest checkpoint.", &help_)),
      validation_loss_(Gauges(*registry_, "rigtune_job_validation_loss",
                              "Latest validation loss of a job (mean token cross-entropy).",
                              &help_)),
      gpu_memory_peak_(Gauges(*registry_, "rigtune_gpu_memory_peak_bytes",
                              "CUDA allocator peak of the rank on a GPU.", &help_)),
      gpu_{&Gauges(*registry_, "rigtune_gpu_memory_used_bytes",
                   "Device memory in use on a GPU, all processes (NVML).", &help_),
           &Gauges(*registry_, "rigtune_gpu_memory_total_bytes",
                   "Device memory capacity of a GPU (NVML).", &help_),
           &Gauges(*registry_, "rigtune_gpu_utilization_ratio",
                   "Fraction of the last sample period a GPU was busy, 0 to 1 (NVML).", &help_),
           &Gauges(*registry_, "rigtune_gpu_power_watts", "Power draw of a GPU board (NVML).",
                   &help_),
           &Gauges(*registry_, "rigtune_gpu_temperature_celsius",
                   "Core temperature of a GPU (NVML).", &help_)},
      tokens_total_(Counter(*registry_, "rigtune_train_tokens_total", "Tokens trained, all jobs.")),
      steps_total_(
          Counter(*registry_, "rigtune_train_steps_total", "Optimizer steps taken, all jobs.")),
      restarts_total_(Counter(*registry_, "rigtune_worker_restarts_total",
                              "Worker group relaunches after a failure.")) {
  Gauges(*registry_, "rigtune_build_info", "Build information; always 1.")
      .Add({{"version", version}})
      .Set(1);
  for (int state = rigtune::v1::Job::QUEUED; state <= rigtune::v1::Job::FAILED; ++state) {
    jobs_.Add({{"state", StateName(static_cast<State>(state))}}).Set(0);
  }
}

// Note [Declared empty families]
// prometheus-cpp leaves a family with no series out of Collect(), so before
// the first job (and always on a machine without GPUs) /metrics would not
// mention rigtune_job_train_loss or rigtune_gpu_memory_peak_bytes at all.
// Dashboards and alert rules query them by name; an operator (and the deploy
// tests) can tell "no data yet" from "no such metric" only if the daemon
// declares them, so each absent family still gets its # HELP and # TYPE.
std::string ServiceMetrics::Serialize() {
  std::vector<std::function<void()>> hooks;
  {
    absl::MutexLock lock(&mu_);
    hooks = scrape_hooks_;
  }
  for (const auto& hook : hooks) hook();
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  for (const auto* family :
       {&loss_, &learning_rate_, &tokens_per_second_, &step_seconds_, &checkpoint_time_,
        &validation_loss_, &gpu_memory_peak_, gpu_.memory_used, gpu_.memory_total,
        gpu_.utilization, gpu_.power, gpu_.temperature}) {
    const std::string& name = family->GetName();
    bool present = false;
    for (const auto& collected : families) present = present || collected.name == name;
    if (!present) {
      out << "# HELP " << name << " " << help_.at(name) << "\n# TYPE " << name << " gauge\n";
    }
  }
  return out.str();
}

void ServiceMetrics::AddScrapeHook(std::function<void()> hook) {
  absl::MutexLock lock(&mu_);
  scrape_hooks_.push_back(std::move(hook));
}

void ServiceMetrics::SetGpuSamples(const std::vector<GpuSample>& samples) {
  absl::MutexLock lock(&mu_);
  // Re-added from the samples each time, so a GPU that is gone (or a
  // quantity no longer reported) leaves no stale series behind.
  for (auto [family, series] : gpu_series_) family->Remove(series);
  gpu_series_.clear();
  for (const GpuSample& sample : samples) {
    const prometheus::Labels labels = {{"gpu", absl::StrCat(sample.index)}, {"name", sample.name}};
    for (auto [family, value] : {std::pair{gpu_.memory_used, sample.memory_used_bytes},
                                 {gpu_.memory_total, sample.memory_total_bytes},
                                 {gpu_.utilization, sample.utilization_ratio},
                                 {gpu_.power, sample.power_watts},
                                 {gpu_.temperature, sample.temperature_celsius}}) {
      if (!value.has_value()) continue;
      prometheus::Gauge& gauge = family->Add(labels);
      gauge.Set(*value);
      gpu_series_.emplace_back(family, &gauge);
    }
  }
}

void ServiceMetrics::SetJobCounts(const std::map<rigtune::v1::Job::State, int>& counts) {
  for (int state = rigtune::v1::Job::QUEUED; state <= rigtune::v1::Job::FAILED; ++state) {
    auto it = counts.find(static_cast<State>(state));
    jobs_.Add({{"state", StateName(static_cast<State>(state))}})
        .Set(it == counts.end() ? 0 : it->second);
  }
}

void ServiceMetrics::SetQueueDepth(int depth) { queue_depth_.Set(depth); }

ServiceMetrics::JobSeries& ServiceMetrics::SeriesLocked(const std::string& job_id) {
  auto it = series_.find(job_id);
  if (it != series_.end()) return it->second;
  const prometheus::Labels labels = {{"job", job_id}};
  JobSeries series;
  series.loss = &loss_.Add(labels);
  series.learning_rate = &learning_rate_.Add(labels);
  series.tokens_per_second = &tokens_per_second_.Add(labels);
  series.step_seconds = &step_seconds_.Add(labels);
  return series_[job_id] = series;
}

void ServiceMetrics::OnStep(const std::string& job_id, int gpu,
                            const rigtune::v1::StepMetrics& metrics) {
  if (gpu >= 0 && metrics.gpu_memory_peak_bytes() > 0) {
    gpu_memory_peak_.Add({{"gpu", absl::StrCat(gpu)}})
        .Set(static_cast<double>(metrics.gpu_memory_peak_bytes()));
  }
  if (metrics.rank() != 0) return;
  absl::MutexLock lock(&mu_);
  JobSeries& series = SeriesLocked(job_id);
  series.loss->Set(metrics.loss());
  series.learning_rate->Set(metrics.learning_rate());
  series.tokens_per_second->Set(metrics.tokens_per_second());
  series.step_seconds->Set(metrics.step_seconds());
  tokens_total_.Increment(static_cast<double>(metrics.tokens()));
  steps_total_.Increment();
}

void ServiceMetrics::OnCheckpoint(const std::string& job_id, double unix_seconds) {
  absl::MutexLock lock(&mu_);
  JobSeries& series = SeriesLocked(job_id);
  if (series.checkpoint_time == nullptr) {
    series.checkpoint_time = &checkpoint_time_.Add({{"job", job_id}});
  }
  series.checkpoint_time->Set(unix_seconds);
}

void ServiceMetrics::OnValidation(const std::string& job_id,
                                  const rigtune::v1::ValidationMetrics& validation) {
  absl::MutexLock lock(&mu_);
  JobSeries& series = SeriesLocked(job_id);
  if (series.validation_loss == nullptr) {
    series.validation_loss = &validation_loss_.Add({{"job", job_id}});
  }
  series.validation_loss->Set(validation.loss());
}

void ServiceMetrics::OnWorkerRestart() { restarts_total_.Increment(); }

void ServiceMetrics::OnJobFinished(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (!series_.count(job_id)) return;
  finished_.push_back(job_id);
  while (finished_.size() > kFinishedJobsKept) {
    auto it = series_.find(finished_.front());
    finished_.pop_front();
    if (it == series_.end()) continue;
    loss_.Remove(it->second.loss);
    learning_rate_.Remove(it->second.learning_rate);
    tokens_per_second_.Remove(it->second.tokens_per_second);
    step_seconds_.Remove(it->second.step_seconds);
    if (it->second.checkpoint_time) checkpoint_time_.Remove(it->second.checkpoint_time);
    if (it->second.validation_loss) validation_loss_.Remove(it->second.validation_loss);
    series_.erase(it);
  }
}

}  // namespace rigtune::server
