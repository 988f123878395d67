// `rigtune merge` / `rigtune export`: the CLI does not link LibTorch, so it
// runs `rigtune-worker merge` and relays its progress, one line per tensor.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/commands.h"

namespace rigtune::client {
namespace {

std::string FindWorker(const MergeOptions& options) {
  if (!options.worker_binary.empty()) return options.worker_binary;
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "rigtune-worker";
  for (const char* candidate : {"rigtune-worker", "../worker/rigtune-worker"}) {
    const std::filesystem::path path = self.parent_path() / candidate;
    if (::access(path.c_str(), X_OK) == 0) return path.lexically_normal().string();
  }
  return "rigtune-worker";  // from $PATH
}

// "tensor 3/29 model.layers.0.mlp.up_proj.weight merged -> model-00001-of-00002.safetensors"
void PrintProgress(const std::string& line, bool tty) {
  if (line.rfind("tensor ", 0) == 0 && tty) {
    std::printf("\r%s\033[K", line.substr(7).c_str());
  } else if (line.rfind("tensor ", 0) == 0) {
    std::printf("%s\n", line.substr(7).c_str());
  } else {
    std::printf("%s%s\n", tty ? "\n" : "", line.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

int Merge(const MergeOptions& options) {
  const std::string worker = FindWorker(options);
  std::vector<std::string> args = {worker,          "merge", "--base", options.base,
                                   "--adapter",     options.adapter, "--out", options.out,
                                   "--max-shard-gb", absl::StrCat(options.max_shard_gb)};
  if (options.quantize_nf4) args.push_back("--quantize-nf4");
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int fds[2];
  if (::pipe(fds) != 0) {
    std::perror("rigtune: pipe");
    return kExitError;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("rigtune: fork");
    return kExitError;
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "rigtune: cannot run %s (use --worker-binary)\n", argv[0]);
    ::_exit(kExitError);
  }
  ::close(fds[1]);
  const bool tty = ::isatty(STDOUT_FILENO);
  FILE* out = ::fdopen(fds[0], "r");
  std::string line;
  for (int c; (c = std::fgetc(out)) != EOF;) {
    if (c != '\n') {
      line.push_back(static_cast<char>(c));
      continue;
    }
    PrintProgress(line, tty);
    line.clear();
  }
  if (!line.empty()) PrintProgress(line, tty);
  std::fclose(out);
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return kExitError;
  return WEXITSTATUS(status);
}

}  // namespace rigtune::client
