//! The benchmark's physical limit: the least a server must do to put the same frames on the
//! same number of loopback sockets. It answers the WebSocket handshake, then writes each
//! frame (a prebuilt TEXT header plus the shared base64 payload) to every socket with vectored
//! writes; no parsing, no protocol, no queues. A socket still busy with an older frame gets
//! only the newest one, as in the addon. `GET /ping` answers `ok` (the route-latency probe).
//!
//! Prints `{"port":P}` on stdout once listening. Runs until killed.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bsn_bench::{wall_clock_us, Args, StampableImage};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// One frame as written: WebSocket TEXT header and payload.
struct WireFrame {
    header: Vec<u8>,
    payload: Bytes,
}

fn text_header(len: usize) -> Vec<u8> {
    let mut header = vec![0x81];
    if len < 126 {
        header.push(len as u8);
    } else if len <= u16::MAX as usize {
        header.push(126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(127);
        header.extend_from_slice(&(len as u64).to_be_bytes());
    }
    header
}

/// Reads an HTTP request head (up to 8 KiB).
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buffer.len() > 8192 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buffer).ok()
}

async fn serve(mut stream: TcpStream, mut frames: watch::Receiver<Option<Arc<WireFrame>>>) {
    let _ = stream.set_nodelay(true);
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    if request.starts_with("GET /ping") {
        loop {
            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if stream.write_all(reply).await.is_err() || read_request(&mut stream).await.is_none() {
                return;
            }
        }
    }
    let key = request.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    });
    let Some(key) = key else { return };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    frames.mark_changed();
    while frames.changed().await.is_ok() {
        let Some(frame) = frames.borrow_and_update().clone() else {
            continue;
        };
        if write_frame(&mut stream, &frame).await.is_err() {
            return;
        }
    }
}

async fn write_frame(stream: &mut TcpStream, frame: &WireFrame) -> std::io::Result<()> {
    let (mut head, mut body) = (&frame.header[..], &frame.payload[..]);
    while !head.is_empty() || !body.is_empty() {
        let n = stream
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

async fn produce(image: StampableImage, fps: f64, frames: watch::Sender<Option<Arc<WireFrame>>>) {
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = Instant::now();
    let start_us = wall_clock_us();
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for seq in 1u64.. {
        let due = ticks.tick().await;
        let payload =
            image.frame_text(seq, start_us + due.duration_since(start).as_micros() as u64);
        let header = text_header(payload.len());
        frames.send_replace(Some(Arc::new(WireFrame { header, payload })));
    }
}

fn main() {
    let args = Args::from_env();
    let image_path = args.text("image", "");
    let jpeg = std::fs::read(&image_path).unwrap_or_else(|e| {
        eprintln!("physical-limit: --image {image_path}: {e}");
        std::process::exit(2)
    });
    let image = StampableImage::new(&jpeg).unwrap_or_else(|e| {
        eprintln!("physical-limit: {e}");
        std::process::exit(2)
    });
    let fps: f64 = args.number("fps", 30.0);
    let port: u16 = args.number("port", 0);
    let threads: usize = args.number("threads", 1);
    let runtime = bsn_bench::runtime(threads).unwrap_or_else(|e| {
        eprintln!("physical-limit: runtime: {e}");
        std::process::exit(2)
    });
    runtime.block_on(async move {
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("physical-limit: bind: {e}");
                std::process::exit(2)
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        println!("{{\"port\":{port}}}");
        let (frames_tx, frames_rx) = watch::channel(None);
        tokio::spawn(produce(image, fps, frames_tx));
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, frames_rx.clone()));
            }
        }
    });
}
