//! `qkv`, the quorumkv command-line tool: a thin shell over the
//! `quorumkv_client` library. Commands live in `cli/` (one file per group),
//! the benchmark in `bench/`.
//!
//! Exit codes: 0 success; 1 a request or command failed (the error is one
//! line on stderr, `Error: ...`); 2 bad usage (from clap); 3 `qkv get` found
//! siblings (they are printed, the caller must resolve them).

mod bench;
mod cli;

use std::process::ExitCode;

use clap::Parser;

// The same allocator as qkvd, so that the benchmark's built-in ceiling
// server and the node are compared on equal terms.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a reader that went away (`qkv
    // … | head`) would panic; the default action ends the process quietly,
    // as any Unix tool. Sockets are unaffected (they send with
    // MSG_NOSIGNAL), and children get the default disposition anyway.
    // SAFETY: called before any other thread exists; `signal` with
    // SIG_DFL has no other effect.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(cli::EXIT_FAILED)
        }
    }
}
