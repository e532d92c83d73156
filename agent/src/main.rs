//! `omaudit-agent`: see the library's crate docs for the design.

fn main() -> std::process::ExitCode {
    // Commands are not always valid UTF-8; the few invalid bytes become U+FFFD rather than failing the prompt.
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    omaudit_agent::cli::run(args)
}
