//! The floor of a target sync: the least a client can do to write the same objects a
//! labelport full sync writes, the same keys and sizes at the same concurrency, and
//! nothing else (no database, no JSON, no retries).
//!
//! - `s3`: unsigned `PUT /<bucket>/<key>`, as many threads as labelport has requests
//!   in flight, each on its own keep-alive HTTP/1.1 connection.
//! - `gcs`: JSON API media uploads, `POST /upload/storage/v1/b/<bucket>/o?uploadType=media&name=<key>`
//!   (`Content-Type: application/json`, no auth: fake-gcs-server), threads as for S3.
//! - `azure`: `Put Blob` (`x-ms-blob-type: BlockBlob`, `Content-Type: application/json`)
//!   signed with Shared Key (HMAC-SHA256, per request, as labelport signs), threads as
//!   for S3. The account and its base64 key come from `FLOOR_AZURE_ACCOUNT` and
//!   `FLOOR_AZURE_KEY`; `<bucket>` is the container, on `/<account>/` (Azurite's layout).
//! - `redis`: `SET <key> <value>` over RESP on one connection, in pipelines of 500
//!   (labelport's `PIPELINE_ITEMS`), up to `threads` pipelines in flight (labelport's
//!   bound), after `SELECT <db>`; `<bucket>` is the database number.
//!
//! Reads a manifest (`<key> <size>` per line); prints the elapsed seconds (from the
//! first request; connecting is not timed). Built by bench/run.sh with `rustc -O`; std
//! only, so SHA-256 and HMAC are below (checked by Azurite, which refuses a wrong
//! signature with 403, and by the test vectors in `self_test`).
//!
//! Usage: targetfloor <s3|gcs|azure|redis> <manifest> <host:port> <bucket> [threads]
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Reads one HTTP/1.1 response; returns its status line. The body is read and dropped.
/// Reads one response; returns its status line and whether the server keeps the
/// connection open (moto answers `Connection: close` to every request).
fn read_response(stream: &mut BufReader<TcpStream>) -> (String, bool) {
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    let mut length = 0usize;
    let mut chunked = false;
    let mut keep_alive = true;
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
            keep_alive = false;
        }
        if line == "\r\n" || line.is_empty() {
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
    (status, keep_alive)
}

fn connect(host: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(host).expect("connect");
    stream.set_nodelay(true).unwrap();
    BufReader::new(stream)
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` when `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ------------------------------------------------------------------ SHA-256, HMAC, base64

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 64];
        for i in 0..16 {
            w[i] = u32::from_be_bytes(block[i * 4..i * 4 + 4].try_into().unwrap());
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = if key.len() > 64 { sha256(key).to_vec() } else { key.to_vec() };
    k.resize(64, 0);
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(data);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha256(&inner));
    sha256(&outer)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.trim().bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c).expect("base64") as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// An RFC 1123 date (`Mon, 30 Nov 2026 10:00:00 GMT`) for now.
fn http_date() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[month as usize - 1],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn self_test() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    // RFC 4231 test case 2.
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(b64_decode(&b64_encode(b"any carnal pleas")), b"any carnal pleas");
    assert_eq!(b64_encode(b"ab"), "YWI=");
}

// ------------------------------------------------------------------ HTTP targets

/// How one object is written over HTTP.
#[derive(Clone)]
enum Style {
    S3,
    Gcs,
    Azure { account: String, key: Vec<u8> },
}

const AZURE_API_VERSION: &str = "2021-08-06";

fn request_head(style: &Style, host: &str, bucket: &str, key: &str, len: usize) -> String {
    match style {
        Style::S3 => format!(
            "PUT /{bucket}/{key} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        ),
        Style::Gcs => format!(
            "POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={} HTTP/1.1\r\nHost: {host}\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
            encode(key, false)
        ),
        Style::Azure { account, key: secret } => {
            let path = format!("/{account}/{}/{}", encode(bucket, false), encode(key, true));
            let date = http_date();
            let to_sign = format!(
                "PUT\n\n\n{len}\n\napplication/json\n\n\n\n\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:{date}\n\
                 x-ms-version:{AZURE_API_VERSION}\n/{account}{path}"
            );
            let signature = b64_encode(&hmac_sha256(secret, to_sign.as_bytes()));
            format!(
                "PUT {path} HTTP/1.1\r\nHost: {host}\r\nx-ms-blob-type: BlockBlob\r\nContent-Type: application/json\r\n\
                 Content-Length: {len}\r\nx-ms-date: {date}\r\nx-ms-version: {AZURE_API_VERSION}\r\n\
                 Authorization: SharedKey {account}:{signature}\r\n\r\n"
            )
        }
    }
}

fn http_floor(style: Style, items: Arc<Vec<(String, usize)>>, host: String, bucket: String, threads: usize) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (items, next, host, bucket, style, ready) =
                (items.clone(), next.clone(), host.clone(), bucket.clone(), style.clone(), ready.clone());
            std::thread::spawn(move || {
                let mut stream = connect(&host);
                let body = vec![b'x'; items.iter().map(|i| i.1).max().unwrap_or(0)];
                let mut request = Vec::with_capacity(body.len() + 1024);
                ready.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, size)) = items.get(i) else { break };
                    // Head and body in one write, so one segment as hyper's vectored
                    // write sends them (two small writes cost the server a second read).
                    request.clear();
                    request.extend_from_slice(request_head(&style, &host, &bucket, key, *size).as_bytes());
                    request.extend_from_slice(&body[..*size]);
                    stream.get_mut().write_all(&request).unwrap();
                    let (status, keep_alive) = read_response(&mut stream);
                    assert!(status.contains(" 200") || status.contains(" 201"), "{key}: {status}");
                    // A new connection where the server closed this one, as any client does.
                    if !keep_alive {
                        stream = connect(&host);
                    }
                }
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for w in workers {
        w.join().unwrap();
    }
    start.elapsed().as_secs_f64()
}

// ------------------------------------------------------------------ Redis

/// labelport's `PIPELINE_ITEMS` (src/storage/redis.rs).
const PIPELINE_ITEMS: usize = 500;

fn read_line(stream: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    assert!(line.starts_with('+'), "unexpected reply {line:?}");
    line
}

fn redis_floor(items: Arc<Vec<(String, usize)>>, host: String, db: String, in_flight: usize) -> f64 {
    let mut reader = BufReader::new(TcpStream::connect(&host).expect("connect"));
    reader.get_ref().set_nodelay(true).unwrap();
    let mut writer = reader.get_ref().try_clone().unwrap();
    writer.write_all(format!("*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n", db.len()).as_bytes()).unwrap();
    read_line(&mut reader);
    let body = vec![b'x'; items.iter().map(|i| i.1).max().unwrap_or(0)];
    let pipelines: Vec<Vec<u8>> = items
        .chunks(PIPELINE_ITEMS)
        .map(|chunk| {
            let mut out = Vec::new();
            for (key, size) in chunk {
                out.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${size}\r\n", key.len()).as_bytes());
                out.extend_from_slice(&body[..*size]);
                out.extend_from_slice(b"\r\n");
            }
            out
        })
        .collect();
    let counts: Vec<usize> = items.chunks(PIPELINE_ITEMS).map(<[_]>::len).collect();
    // A slot per pipeline in flight: the writer takes one before sending a pipeline,
    // the reader gives it back when the pipeline's last reply is in.
    let (slots_tx, slots_rx) = std::sync::mpsc::sync_channel::<usize>(in_flight);
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        while let Ok(count) = slots_rx.recv() {
            for _ in 0..count {
                read_line(&mut reader);
            }
        }
    });
    for (pipeline, count) in pipelines.iter().zip(counts) {
        slots_tx.send(count).unwrap();
        writer.write_all(pipeline).unwrap();
    }
    drop(slots_tx);
    reader.join().unwrap();
    start.elapsed().as_secs_f64()
}

fn main() {
    self_test();
    let args: Vec<String> = std::env::args().collect();
    let mode = args[1].as_str();
    let manifest = std::fs::read_to_string(&args[2]).expect("manifest");
    let host = args[3].clone();
    let bucket = args[4].clone();
    let threads: usize = args.get(5).map(|t| t.parse().unwrap()).unwrap_or(32);
    let items: Arc<Vec<(String, usize)>> = Arc::new(
        manifest.lines().filter_map(|l| l.split_once(' ')).map(|(k, s)| (k.to_owned(), s.parse().unwrap())).collect(),
    );
    let seconds = match mode {
        "s3" => http_floor(Style::S3, items, host, bucket, threads),
        "gcs" => http_floor(Style::Gcs, items, host, bucket, threads),
        "azure" => {
            let account = std::env::var("FLOOR_AZURE_ACCOUNT").expect("FLOOR_AZURE_ACCOUNT");
            let key = b64_decode(&std::env::var("FLOOR_AZURE_KEY").expect("FLOOR_AZURE_KEY"));
            http_floor(Style::Azure { account, key }, items, host, bucket, threads)
        }
        "redis" => redis_floor(items, host, bucket, threads),
        other => panic!("unknown target {other}; expected s3, gcs, azure or redis"),
    };
    println!("{seconds:.6}");
}
