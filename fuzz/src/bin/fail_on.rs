//! Fuzz target: a `--fail-on` expression, parsed for `record`/`report` and for `diff`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        loopprof::fuzz_targets::fail_on(data);
    });
}
