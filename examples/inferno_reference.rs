//! The reference for the rendering part of the analysis benchmark: reads folded stacks and
//! renders one flame graph with inferno (the library loopprof uses), as `inferno-flamegraph`
//! would, and prints the time it took.
//!
//!     cargo run --release --example inferno_reference -- IN.folded OUT.svg

use std::io::BufRead;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: inferno_reference IN.folded OUT.svg");
        std::process::exit(2);
    }
    let started = std::time::Instant::now();
    let input = std::io::BufReader::new(std::fs::File::open(&args[1]).expect("open folded"));
    let lines: Vec<String> = input.lines().map(|l| l.expect("read line")).collect();
    let mut opts = inferno::flamegraph::Options::default();
    opts.min_width = 1.0;
    let out = std::io::BufWriter::new(std::fs::File::create(&args[2]).expect("create svg"));
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(|s| s.as_str()), out)
        .expect("render");
    println!("{:.3}", started.elapsed().as_secs_f64());
}
