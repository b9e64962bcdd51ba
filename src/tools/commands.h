// The moerun subcommands. Each Register* adds one CLI11 subcommand whose callback stores its
// exit code in *exit_code (0 = success; errors are printed as "moerun: error: ..." on stderr).
#pragma once

#include <CLI/CLI.hpp>

namespace moerun {

void RegisterMoeLayerCommand(CLI::App& app, int* exit_code);
void RegisterBenchMoeCommand(CLI::App& app, int* exit_code);
void RegisterMakeExampleCommand(CLI::App& app, int* exit_code);
void RegisterModelCommands(CLI::App& app, int* exit_code);  // logits, tokenize, inspect
void RegisterBenchCommands(CLI::App& app, int* exit_code);  // bench, read-bandwidth
void RegisterMakeModelCommand(CLI::App& app, int* exit_code);
void RegisterGenerateCommand(CLI::App& app, int* exit_code);
void RegisterEvalCommand(CLI::App& app, int* exit_code);
void RegisterConvertGgufCommand(CLI::App& app, int* exit_code);  // quantize (alias convert-gguf)
void RegisterPlanCommand(CLI::App& app, int* exit_code);         // plan (layout collectives, no run)
void RegisterServeCommand(CLI::App& app, int* exit_code);        // serve (OpenAI-compatible HTTP)

}  // namespace moerun
