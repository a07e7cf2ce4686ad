//! The floor: the least work that produces the same files as a labelport full sync.
//!
//! Reads a manifest (`<key> <size>` per line), and for every entry writes `size`
//! bytes into `<dir>` under `<key>` atomically, with nothing else around it (no
//! database, no JSON). Work is split over `threads` threads (default: 2). Modes:
//! - `tmpfile` (default): an unnamed `O_TMPFILE` file linked under the key when
//!   complete — what labelport's writer does for new files;
//! - `rename`: a named temporary file renamed to the key — the pattern issue 4 names,
//!   and what labelport does when it replaces an existing file.
//! Prints the elapsed seconds on stdout.
//!
//! Built by bench/run.sh with `rustc -O`; no dependencies (libc's `linkat` is declared).
//! Usage: floor <manifest> <dir> [threads] [tmpfile|rename]
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

extern "C" {
    fn linkat(olddirfd: i32, oldpath: *const std::ffi::c_char, newdirfd: i32, newpath: *const std::ffi::c_char, flags: i32) -> i32;
}
const AT_FDCWD: i32 = -100;
const AT_SYMLINK_FOLLOW: i32 = 0x400;
const O_TMPFILE: i32 = 0o20200000;

/// Writes `body` to an unnamed file in `dir` and links it as `dst`.
fn write_tmpfile(dir: &std::path::Path, dst: &std::path::Path, body: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).custom_flags(O_TMPFILE).mode(0o666).open(dir).expect("O_TMPFILE");
    f.write_all(body).expect("write");
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
    let dst = std::ffi::CString::new(dst.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe { linkat(AT_FDCWD, proc_path.as_ptr(), AT_FDCWD, dst.as_ptr(), AT_SYMLINK_FOLLOW) };
    assert_eq!(rc, 0, "linkat: {}", std::io::Error::last_os_error());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: floor <manifest> <dir> [threads]");
        std::process::exit(2);
    }
    let manifest = fs::read_to_string(&args[1]).expect("manifest");
    let dir = PathBuf::from(&args[2]);
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(2).max(1);
    let tmpfile = match args.get(4).map(String::as_str) {
        None | Some("tmpfile") => true,
        Some("rename") => false,
        Some(other) => panic!("unknown mode {other}: use tmpfile or rename"),
    };
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
                    if tmpfile {
                        write_tmpfile(dir, &dir.join(key), &body[..*size]);
                        continue;
                    }
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
