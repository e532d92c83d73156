//! The `omserver` binary: parse the command line, set up logging, hand over to [`omserver::cli`].

use clap::Parser;

/// mimalloc rather than glibc's malloc: request handlers allocate what the audit writer thread frees, and glibc
/// spent ~15 % of the request threads' time on that (perf, BENCHMARKS.md). With the `override` feature it is
/// also `malloc` for C code: SQLite copies every column of every row it hands sqlx with its `malloc`, on sqlx's
/// connection thread, and the handler frees it on another; under glibc that was 16–20 % of the server's samples in
/// an audit listing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = omserver::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.default_log_filter())),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(args) = cli.worker() {
        // A module worker is a plain single-threaded program until its module starts threads of its own.
        return omserver::worker::child::main(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("omserver: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("omserver: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
