//! The S3 floor: the least a client can do to put the same objects a labelport S3
//! sync puts: N unsigned `PUT /<bucket>/<key>` requests of the same sizes, over
//! HTTP/1.1 connections (kept alive unless the server closes them) from `threads` threads (the same concurrency as
//! labelport's writer), nothing else (no database, no JSON, no signing).
//!
//! Reads a manifest (`<key> <size>` per line); prints the elapsed seconds.
//! Built by bench/run.sh with `rustc -O`; no dependencies.
//! Usage: s3floor <manifest> <host:port> <bucket> [threads]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Puts one object; returns whether the server keeps the connection open.
fn put(stream: &mut BufReader<TcpStream>, host: &str, bucket: &str, key: &str, body: &[u8]) -> bool {
    let head = format!(
        "PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let s = stream.get_mut();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    assert!(status.contains(" 200"), "PUT {key}: {status}");
    let mut length = 0usize;
    let mut chunked = false;
    let mut close = false;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut skip = vec![0u8; n + 2];
            stream.read_exact(&mut skip).unwrap();
            if n == 0 {
                break;
            }
        }
    } else {
        let mut skip = vec![0u8; length];
        stream.read_exact(&mut skip).unwrap();
    }
    !close
}

fn connect(host: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(host).expect("connect");
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let manifest = std::fs::read_to_string(&args[1]).expect("manifest");
    let host = args[2].clone();
    let bucket = args[3].clone();
    let threads: usize = args.get(4).map(|t| t.parse().unwrap()).unwrap_or(32);
    let items: Arc<Vec<(String, usize)>> = Arc::new(
        manifest
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, s)| (k.to_owned(), s.parse().unwrap()))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (items, next, host, bucket) = (items.clone(), next.clone(), host.clone(), bucket.clone());
            std::thread::spawn(move || {
                // Keep-alive where the server allows it; a new connection where it
                // answers `Connection: close` (moto does), as any HTTP client would.
                let mut stream = connect(&host);
                let body = vec![b'x'; items.iter().map(|i| i.1).max().unwrap_or(0)];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, size)) = items.get(i) else { break };
                    if !put(&mut stream, &host, &bucket, key, &body[..*size]) {
                        stream = connect(&host);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    println!("{:.6}", start.elapsed().as_secs_f64());
}
