// rigtuned with TLS on both ports: certificates made here with the openssl
// CLI; the CLI and REST over TLS, plaintext and a wrong CA refused, mutual
// TLS, and a certificate swapped in with SIGHUP.
#include <signal.h>

#include <httplib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/daemon_process.h"
#include "tests/server/test_dir.h"

namespace rigtune::e2e {
namespace {

namespace fs = std::filesystem;

// A CA (name.crt, name.key) in `dir`.
void MakeCa(const fs::path& dir, const std::string& name) {
  const std::string command = absl::StrCat(
      "cd ", dir.string(), " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1",
      " -nodes -days 2 -subj /CN=", name, " -keyout ", name, ".key -out ", name,
      ".crt >/dev/null 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

// A certificate (name.crt, name.key) signed by `ca`, valid for 127.0.0.1
// and localhost.
void MakeLeaf(const fs::path& dir, const std::string& ca, const std::string& name) {
  std::ofstream(dir / "san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  const std::string command = absl::StrCat(
      "cd ", dir.string(), " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1",
      " -nodes -subj /CN=localhost -keyout ", name, ".key -out ", name, ".csr >/dev/null 2>&1",
      " && openssl x509 -req -in ", name, ".csr -CA ", ca, ".crt -CAkey ", ca,
      ".key -CAcreateserial -days 2 -extfile san.ext -out ", name, ".crt >/dev/null 2>&1");
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
}

class TlsE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = rigtune::testing::FreshTestDir("e2e");
    rigtune::testing::ClearFakeWorkerKnobs();
    MakeCa(dir_, "ca");
    MakeCa(dir_, "other-ca");
    MakeLeaf(dir_, "ca", "server");
    MakeLeaf(dir_, "ca", "client");
  }

  void TearDown() override { unsetenv("RIGTUNE_TOKEN"); }

  void StartDaemon(bool mutual) {
    std::vector<std::string> args = {"--tls-cert-file", Path("server.crt"), "--tls-key-file",
                                     Path("server.key")};
    if (mutual) args.insert(args.end(), {"--tls-client-ca-file", Path("ca.crt")});
    daemon_ = std::make_unique<DaemonProcess>((dir_ / "state").string(), RIGTUNE_FAKE_WORKER,
                                              args);
    ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string Https() const { return absl::StrCat("https://127.0.0.1:", daemon_->grpc_port()); }

  // An HTTPS client trusting `ca`, with a client certificate when `client`.
  std::unique_ptr<httplib::SSLClient> Rest(const std::string& ca, bool client = false) {
    auto rest = client ? std::make_unique<httplib::SSLClient>("127.0.0.1", daemon_->http_port(),
                                                              Path("client.crt"),
                                                              Path("client.key"))
                       : std::make_unique<httplib::SSLClient>("127.0.0.1", daemon_->http_port());
    rest->set_ca_cert_path(Path(ca).c_str());
    rest->enable_server_certificate_verification(true);
    rest->set_read_timeout(30, 0);
    return rest;
  }

  // Sends SIGHUP and waits (10 s at most) for `logged` in the daemon's log.
  bool Sighup(const std::string& logged) {
    if (kill(daemon_->pid(), SIGHUP) != 0) return false;
    for (int i = 0; i < 100; ++i) {
      if (daemon_->Log().find(logged) != std::string::npos) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }

  fs::path dir_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(TlsE2ETest, CliAndRestWorkOverTlsAndPlaintextIsRefused) {
  StartDaemon(/*mutual=*/false);
  // The CLI over TLS: a job runs to the end (its worker dials a loopback port).
  CliResult submit = RunCli(Https(), "--ca-file " + Path("ca.crt") +
                                         " submit --json --model random:tiny --max-steps 3");
  ASSERT_EQ(submit.exit_code, 0) << submit.output << daemon_->Log();
  const std::string id = nlohmann::json::parse(submit.output, nullptr, false).value("id", "");
  EXPECT_EQ(RunCli(Https(), "--ca-file " + Path("ca.crt") + " watch " + id).exit_code, 0)
      << daemon_->Log();
  EXPECT_EQ(RunCli(absl::StrCat("127.0.0.1:", daemon_->grpc_port()),
                   "--tls --ca-file " + Path("ca.crt") + " health").exit_code, 0);

  // REST over TLS.
  auto rest = Rest("ca.crt");
  auto health = rest->Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  auto job = rest->Get(("/v1/jobs/" + id).c_str());
  ASSERT_TRUE(job);
  EXPECT_NE(job->body.find("SUCCEEDED"), std::string::npos) << job->body;

  // Plaintext to the TLS ports fails with a reason, not a hang.
  httplib::Client plain("127.0.0.1", daemon_->http_port());
  plain.set_read_timeout(30, 0);
  auto refused = plain.Get("/healthz");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400);
  EXPECT_NE(refused->body.find("https://"), std::string::npos) << refused->body;
  CliResult plain_cli =
      RunCli(absl::StrCat("127.0.0.1:", daemon_->grpc_port()), "--timeout 5 health");
  EXPECT_EQ(plain_cli.exit_code, 3) << plain_cli.output;

  // A CA that did not sign the server's certificate is refused by both.
  EXPECT_FALSE(Rest("other-ca.crt")->Get("/healthz"));
  EXPECT_EQ(RunCli(Https(), "--timeout 5 --ca-file " + Path("other-ca.crt") + " health").exit_code,
            3);
}

TEST_F(TlsE2ETest, MutualTlsNeedsAClientCertificate) {
  StartDaemon(/*mutual=*/true);
  EXPECT_FALSE(Rest("ca.crt")->Get("/healthz")) << "no client certificate, yet served";
  auto served = Rest("ca.crt", /*client=*/true)->Get("/v1/jobs");
  ASSERT_TRUE(served) << httplib::to_string(served.error());
  EXPECT_EQ(served->status, 200);
  const std::string tls = "--timeout 5 --ca-file " + Path("ca.crt");
  EXPECT_EQ(RunCli(Https(), tls + " health").exit_code, 3);
  CliResult with_cert = RunCli(
      Https(), tls + " --cert-file " + Path("client.crt") + " --key-file " + Path("client.key") +
                   " health");
  EXPECT_EQ(with_cert.exit_code, 0) << with_cert.output;
}

TEST_F(TlsE2ETest, SighupSwapsTheCertificate) {
  StartDaemon(/*mutual=*/false);
  MakeLeaf(dir_, "other-ca", "renewed");
  fs::copy_file(dir_ / "renewed.crt", dir_ / "server.crt", fs::copy_options::overwrite_existing);
  fs::copy_file(dir_ / "renewed.key", dir_ / "server.key", fs::copy_options::overwrite_existing);
  ASSERT_TRUE(Sighup("reloaded the TLS certificate")) << daemon_->Log();
  EXPECT_TRUE(Rest("other-ca.crt")->Get("/healthz"));
  EXPECT_FALSE(Rest("ca.crt")->Get("/healthz"));
  EXPECT_EQ(RunCli(Https(), "--timeout 5 --ca-file " + Path("other-ca.crt") + " health").exit_code,
            0);
  // A broken file on the next SIGHUP keeps the current certificate.
  std::ofstream(dir_ / "server.key") << "not a key\n";
  EXPECT_TRUE(Sighup("keeping the old certificate")) << daemon_->Log();
  EXPECT_TRUE(Rest("other-ca.crt")->Get("/healthz"));
}

TEST_F(TlsE2ETest, NonLoopbackListenNeedsTlsUnlessAllowedInsecure) {
  setenv("RIGTUNE_TOKEN", "s3cret", 1);
  daemon_ = std::make_unique<DaemonProcess>((dir_ / "state").string(), RIGTUNE_FAKE_WORKER,
                                            std::vector<std::string>{"--http-listen", "0.0.0.0:0"});
  EXPECT_FALSE(daemon_->Start());
  EXPECT_NE(daemon_->Log().find("http_listen: 0.0.0.0:0 is not loopback; set tls_cert_file"),
            std::string::npos)
      << daemon_->Log();
  daemon_ = std::make_unique<DaemonProcess>(
      (dir_ / "state2").string(), RIGTUNE_FAKE_WORKER,
      std::vector<std::string>{"--http-listen", "0.0.0.0:0", "--allow-insecure"});
  EXPECT_TRUE(daemon_->Start()) << daemon_->Log();
}

}  // namespace
}  // namespace rigtune::e2e
