// moerun: run mixture-of-experts blocks and models on CPUs.
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>

#include "core/signals.h"
#include "kernels/kernel_table.h"
#include "tools/commands.h"

namespace {

int Run(int argc, char** argv) {
  CLI::App app{"moerun: mixture-of-experts inference on CPUs"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "Print the version, the CPU features and the kernel rows chosen");
  int exit_code = 0;
  moerun::RegisterMoeLayerCommand(app, &exit_code);
  moerun::RegisterBenchMoeCommand(app, &exit_code);
  moerun::RegisterMakeExampleCommand(app, &exit_code);
  moerun::RegisterGenerateCommand(app, &exit_code);
  moerun::RegisterEvalCommand(app, &exit_code);
  moerun::RegisterModelCommands(app, &exit_code);
  moerun::RegisterBenchCommands(app, &exit_code);
  moerun::RegisterMakeModelCommand(app, &exit_code);
  moerun::RegisterConvertGgufCommand(app, &exit_code);
  moerun::RegisterPlanCommand(app, &exit_code);
  moerun::RegisterServeCommand(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::printf("moerun %s\n%s\n", MOERUN_VERSION, moerun::DescribeKernelChoice({}).c_str());
    return 0;
  }
  if (app.get_subcommands().empty()) {
    std::fprintf(stderr, "%s", app.help().c_str());
    return 1;
  }
  return exit_code;
}

}  // namespace

// Results on stdout that did not reach their file (a full disk, /dev/full, a closed pipe) make the
// run fail: an exit code of 0 must mean the output is complete.
int CheckStdout(int exit_code) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return exit_code;
  const int err = errno;
  std::fprintf(stderr, "moerun: error: writing standard output failed: %s\n",
               err != 0 ? std::strerror(err) : "write error");
  return exit_code != 0 ? exit_code : 1;
}

int main(int argc, char** argv) {
  moerun::InstallSignalReport();  // SIGINT / SIGTERM: a last line saying where this rank was
  // Errors travel as Status; this only catches what a library throws (e.g. allocation failure).
  try {
    return CheckStdout(Run(argc, argv));
  } catch (const std::bad_alloc&) {
    std::fprintf(
        stderr,
        "moerun: error: out of memory: an allocation failed (lower --max-new / -c / --batch / -t, or "
        "give --max-memory BYTES to have the run refused up front with its estimate)\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moerun: error: %s\n", e.what());
    return 2;
  }
}
