// Entry point of the `veda` CLI. Every failure ends here as one line on stderr,
// "veda: error: ...", and a non-zero exit status; --help prints to stdout and exits 0.
#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <string>

#include "commands.h"
#include "veda/error.h"

int main(int argc, char** argv) {
  CLI::App app{"veda: sparse attention for video diffusion transformers (CPU reference)", "veda"};
  app.require_subcommand(1);
  veda::cli::add_attention_command(app);
  veda::cli::add_inspect_command(app);
  veda::cli::add_demo_command(app);
  veda::cli::add_calibrate_command(app);
  try {
    // Subcommands run inside parse(), from their callbacks.
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    // Point at the help of the subcommand being parsed, if any.
    const auto selected = app.get_subcommands();
    const std::string help =
        selected.empty() ? "veda --help" : "veda " + selected.front()->get_name() + " --help";
    std::cerr << "veda: error: " << error.what() << " (see '" << help << "')\n";
    return error.get_exit_code();
  } catch (const veda::Error& error) {
    std::cerr << "veda: error: " << error.what() << "\n";
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "veda: error: unexpected failure: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
