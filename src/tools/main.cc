// moerun: run mixture-of-experts blocks and models on CPUs.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

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

int main(int argc, char** argv) {
  // Errors travel as Status; this only catches what a library throws (e.g. allocation failure).
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moerun: error: %s\n", e.what());
    return 2;
  }
}
