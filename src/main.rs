//! The `sallyport` binary: parse the command line, run, exit with the command's code.

use std::process::ExitCode;

fn main() -> ExitCode {
    sallyport::cli::main()
}
