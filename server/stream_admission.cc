#include "server/stream_admission.h"

#include "absl/strings/str_cat.h"

namespace rigtune::server {

StreamTicket& StreamTicket::operator=(StreamTicket&& other) noexcept {
  if (this != &other) {
    Reset();
    owner_ = other.owner_;
    client_ = std::move(other.client_);
    other.owner_ = nullptr;
  }
  return *this;
}

void StreamTicket::Reset() {
  if (owner_ != nullptr) owner_->Release(client_);
  owner_ = nullptr;
}

absl::StatusOr<StreamTicket> StreamAdmission::Admit(const std::string& client) {
  absl::MutexLock lock(&mu_);
  int& mine = per_client_[client];
  if (mine >= max_per_client_) {
    if (mine == 0) per_client_.erase(client);
    return absl::ResourceExhaustedError(
        absl::StrCat("watch: ", client, " already has ", max_per_client_,
                     " open streams (http_max_streams_per_client); close one and retry"));
  }
  if (total_ >= max_total_) {
    if (mine == 0) per_client_.erase(client);
    return absl::UnavailableError(absl::StrCat(
        "watch: the server has ", max_total_, " open streams (http_max_streams); retry later"));
  }
  ++mine;
  ++total_;
  return StreamTicket(this, client);
}

int StreamAdmission::open() const {
  absl::MutexLock lock(&mu_);
  return total_;
}

void StreamAdmission::Release(const std::string& client) {
  absl::MutexLock lock(&mu_);
  --total_;
  if (--per_client_[client] <= 0) per_client_.erase(client);
}

}  // namespace rigtune::server
