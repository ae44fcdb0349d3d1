//! The `netpoll` command: an echo server on netpoll (Go's netpoller semantics in Rust).
//!
//! `netpoll --help` for the commands, `netpoll echo --help` for the server's options.

mod cli;
mod echo;

use std::io::Write;
use std::process::ExitCode;

use cli::Command;

/// Exit status of a usage error (as most command-line tools: BSD's `EX_USAGE` is 64, but 2
/// is what shells, getopt-based tools and clap use).
const USAGE_ERROR: u8 = 2;

/// The environment variable holding the log filter (env_logger's syntax).
const LOG_ENV: &str = "NETPOLL_LOG";

/// Logs to stderr at `default` and above, unless `NETPOLL_LOG` says otherwise: its directives
/// come after the default, so a bare level there replaces it and `module=level` refines it.
fn init_logging(default: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(default);
    if let Ok(filter) = std::env::var(LOG_ENV) {
        builder.parse_filters(&filter);
    }
    builder.target(env_logger::Target::Stderr).init();
}

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            // A closed stderr leaves nothing to tell; the status still says it.
            let _ = match e.usage {
                Some(usage) => write!(std::io::stderr(), "netpoll: {}\n\n{usage}", e.message),
                None => writeln!(
                    std::io::stderr(),
                    "netpoll: {}\nTry '{}' for more information.",
                    e.message,
                    e.hint
                ),
            };
            return ExitCode::from(USAGE_ERROR);
        }
    };
    let result = match command {
        Command::Help(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            let _ = writeln!(std::io::stdout(), "netpoll {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Echo(opts) => {
            init_logging(if opts.verbose {
                log::LevelFilter::Debug
            } else if opts.quiet {
                log::LevelFilter::Error
            } else {
                log::LevelFilter::Warn
            });
            echo::run(opts)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "netpoll: {e}");
            ExitCode::FAILURE
        }
    }
}
