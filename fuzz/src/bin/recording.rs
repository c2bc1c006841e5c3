//! Fuzz target: any bytes given to `report`/`inspect`/`diff` as a recording. The reader must
//! load it or give a clear error, never panic, and every analysis and renderer must then run
//! on whatever it loaded (a recording that loads is one a user gets a report of).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        loopprof::fuzz_targets::recording(data);
    });
}
