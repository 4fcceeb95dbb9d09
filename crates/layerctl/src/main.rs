//! `layerctl`: the command-line tool over the layer store.
//!
//! Subcommands are grouped by area; each group lives in its own module.
//!
//! * `layerctl tar-split disasm|asm|checksize`: a drop-in for Go's `tar-split` CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod tarsplit_cmd;

#[derive(Debug, Parser)]
#[command(name = "layerctl", version, about = "Container image layer store tool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Disassemble and reassemble tar archives (compatible with Go's tar-split).
    #[command(name = "tar-split")]
    TarSplit(tarsplit_cmd::TarSplitArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::TarSplit(args) => tarsplit_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("layerctl: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
