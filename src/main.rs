//! The `loopprof` binary: a thin wrapper around [`loopprof::cli::main`].

fn main() {
    std::process::exit(loopprof::cli::main());
}
