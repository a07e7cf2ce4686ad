//! The floor: the least work that produces the same files as a labelport full sync.
//!
//! Reads a manifest (`<key> <size>` per line), and for every entry writes `size`
//! bytes to a temporary file in `<dir>` and renames it to `<key>` — the same
//! temp-file-and-rename pattern as labelport's writer, with nothing else around it
//! (no database, no JSON). Work is split over `threads` threads (default: 2).
//! Prints the elapsed seconds on stdout.
//!
//! Built by bench/run.sh with `rustc -O`; no dependencies.
//! Usage: floor <manifest> <dir> [threads]
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: floor <manifest> <dir> [threads]");
        std::process::exit(2);
    }
    let manifest = fs::read_to_string(&args[1]).expect("manifest");
    let dir = PathBuf::from(&args[2]);
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(2).max(1);
    let entries: Vec<(String, usize)> = manifest
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect();
    let max = entries.iter().map(|e| e.1).max().unwrap_or(0);
    let body = vec![b'x'; max];
    let start = Instant::now();
    let chunk = entries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (t, part) in entries.chunks(chunk).enumerate() {
            let dir = &dir;
            let body = &body;
            s.spawn(move || {
                for (i, (key, size)) in part.iter().enumerate() {
                    let tmp = dir.join(format!(".floor-tmp-{key}.{t}.{i}"));
                    let mut f = fs::File::create(&tmp).expect("create");
                    f.write_all(&body[..*size]).expect("write");
                    drop(f);
                    fs::rename(&tmp, dir.join(key)).expect("rename");
                }
            });
        }
    });
    println!("{:.6}", start.elapsed().as_secs_f64());
}
