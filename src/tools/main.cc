// moerun: run mixture-of-experts blocks and models on CPUs.
#include <CLI/CLI.hpp>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"moerun: mixture-of-experts inference on CPUs"};
  app.require_subcommand(1);
  int exit_code = 0;
  moerun::RegisterMoeLayerCommand(app, &exit_code);
  moerun::RegisterBenchMoeCommand(app, &exit_code);
  moerun::RegisterMakeExampleCommand(app, &exit_code);
  moerun::RegisterGenerateCommand(app, &exit_code);
  moerun::RegisterEvalCommand(app, &exit_code);
  moerun::RegisterModelCommands(app, &exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
