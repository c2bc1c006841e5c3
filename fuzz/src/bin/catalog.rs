//! Fuzz target: a `--catalog` file.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        loopprof::fuzz_targets::catalog(data);
    });
}
