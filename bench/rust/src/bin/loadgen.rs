//! Viewer load generator of the benchmark: opens N WebSocket viewers on a stream route
//! (tokio-tungstenite), some of which may stall (never read), and measures what they receive
//! during a timed window: frames per viewer, latency from the capture time stamped in each
//! frame, bytes; plus the latency of a plain HTTP route during the load and, after the window,
//! how long a new viewer waits for its first frame.
//!
//! Wires: without `--protocol`, TEXT frames are base64 JPEGs (compat) and BINARY frames raw
//! JPEGs (tuned TS). With `--protocol browser-stream.v1` every viewer offers that subprotocol
//! (the handshake fails unless the server echoes it) and BINARY frames carry the extended
//! header, skipped by its length byte, before the JPEG. JSON TEXT messages are counted and
//! otherwise ignored on every wire.
//!
//! With `--video` (implies `--protocol browser-stream.v1`) every healthy viewer asks for H.264
//! video: after the first `session-meta` it sends `{"type":"config","video":{"codecs":
//! ["avc1.42E01F"]}}`, then counts kind-2 chunks (56-byte header: flags at 3, capture ms at 12,
//! chunk number at 52). A chunk counts for the window by its capture time, as a frame does, and
//! as delivered when it arrives within the deadline (a refinement, flag bit 1, re-encodes an
//! older picture: it counts by arrival time, without a deadline). The chunks the server made in
//! the window are the highest minus the lowest chunk number any viewer got in it, plus one; a
//! viewer's delivery is its chunks in the window over that. A chunk number that is not one more
//! than the viewer's previous one is a gap (the server skipped chunks for that viewer). The
//! summary fields are then about chunks; `video` holds the rest (gaps, keyframes, …).
//!
//! Every result also carries `loadgenCpu`: this process's user+sys seconds (/proc/self/stat,
//! all threads) over the window and in all.
//!
//! Talks to the orchestrator (`bench/run.js`) by JSON lines on stdout: `connected`,
//! `window_start`, `window_end`, then one `result`. Bounded: it exits after `--max-seconds`
//! whatever happens, and connects only to the address it is given (loopback in the benchmark).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bsn_bench::{parse_stamp_base64, parse_stamp_bytes, wall_clock_us, Args, Wire};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the run is asked to do.
struct Plan {
    url: String,
    addr: SocketAddr,
    /// Subprotocol offered on every connection (`Sec-WebSocket-Protocol`), if any.
    protocol: Option<String>,
    /// How BINARY messages carry frames, from `protocol`.
    wire: Wire,
    viewers: usize,
    stalled: usize,
    fps: f64,
    warmup: Duration,
    window: Duration,
    grace: Duration,
    connect_concurrency: usize,
    ping_path: Option<String>,
    ping_interval: Duration,
    first_frame_probes: usize,
    /// A frame arriving later than this after its capture time is late, not delivered.
    deadline_us: u64,
    /// The whole connect phase may take this long; viewers not connected by then count as
    /// receiving nothing.
    connect_phase: Duration,
    /// Ask for H.264 video (`config.video`) and measure kind-2 chunks instead of frames.
    video: bool,
}

/// What every video viewer sends once it has the first `session-meta`.
const VIDEO_CONFIG: &str = r#"{"type":"config","video":{"codecs":["avc1.42E01F"]}}"#;
/// `kind` of an extended binary message that carries a video chunk.
const KIND_VIDEO_CHUNK: u8 = 2;

/// Header fields of a video chunk.
struct ChunkHeader {
    keyframe: bool,
    refinement: bool,
    capture_us: u64,
    number: u32,
}

fn parse_chunk_header(message: &[u8]) -> Option<ChunkHeader> {
    let header = *message.get(1)? as usize;
    if *message.first()? != KIND_VIDEO_CHUNK || header < bsn_bench::EXTENDED_HEADER_V1_BYTES {
        return None;
    }
    let flags = *message.get(3)?;
    let capture_ms = f64::from_be_bytes(message.get(12..20)?.try_into().ok()?);
    let number = u32::from_be_bytes(message.get(52..56)?.try_into().ok()?);
    Some(ChunkHeader {
        keyframe: flags & 1 != 0,
        refinement: flags & 2 != 0,
        capture_us: if capture_ms.is_finite() && capture_ms > 0.0 {
            (capture_ms * 1000.0).round() as u64
        } else {
            0
        },
        number,
    })
}

/// This process's user+sys CPU seconds, all threads (dead ones included), from /proc/self/stat.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this benchmark runs on (x86-64, arm64).
    Some((utime + stime) / 100.0)
}

/// What one video viewer saw of the chunk stream.
#[derive(Default)]
struct VideoTally {
    config_sent: bool,
    video_configs: u64,
    /// Every chunk received (in the window or not).
    chunks_total: u64,
    /// Chunks of the window that arrived within the deadline.
    chunks: u64,
    bytes: u64,
    late_chunks: u64,
    chunks_outside_window: u64,
    keyframes: u64,
    refinements: u64,
    /// Lowest and highest chunk number received in the window.
    min_number: Option<u32>,
    max_number: Option<u32>,
    last_number: Option<u32>,
    /// Jumps in the chunk numbers, and the chunks they skipped (all, and in the window).
    gaps: u64,
    skipped: u64,
    gaps_in_window: u64,
    skipped_in_window: u64,
    /// JPEG frames (kind 1) before the first chunk, and after it (there should be none).
    jpeg_before_video: u64,
    jpeg_after_video: u64,
    /// `{"error":…}` messages (e.g. `video_unavailable`), first one kept.
    errors: u64,
    first_error: Option<String>,
}

impl VideoTally {
    fn on_chunk(
        &mut self,
        chunk: ChunkHeader,
        len: usize,
        window: &Window,
        deadline_us: u64,
        latencies_us: &mut Vec<u32>,
    ) {
        self.chunks_total += 1;
        let now_us = wall_clock_us();
        // A refinement re-encodes an older picture: it belongs to the window it arrives in.
        let time_us = if chunk.refinement {
            now_us
        } else {
            chunk.capture_us
        };
        let in_window = window.contains(time_us);
        if let Some(last) = self.last_number {
            let step = chunk.number.wrapping_sub(last);
            if step != 1 {
                self.gaps += 1;
                // A step of 0 or "backwards" (a restarted stream) skipped nothing we can count.
                let skipped = if step > 1 && step < u32::MAX / 2 {
                    (step - 1) as u64
                } else {
                    0
                };
                self.skipped += skipped;
                if in_window {
                    self.gaps_in_window += 1;
                    self.skipped_in_window += skipped;
                }
            }
        }
        self.last_number = Some(chunk.number);
        if !in_window {
            self.chunks_outside_window += 1;
            return;
        }
        self.min_number = Some(
            self.min_number
                .map_or(chunk.number, |m| m.min(chunk.number)),
        );
        self.max_number = Some(
            self.max_number
                .map_or(chunk.number, |m| m.max(chunk.number)),
        );
        if chunk.keyframe {
            self.keyframes += 1;
        }
        if chunk.refinement {
            self.refinements += 1;
        } else {
            let latency_us = now_us.saturating_sub(chunk.capture_us);
            latencies_us.push(latency_us.min(u32::MAX as u64) as u32);
            if latency_us > deadline_us {
                self.late_chunks += 1;
                return;
            }
        }
        self.chunks += 1;
        self.bytes += len as u64;
    }
}

/// The measurement window, in µs since the epoch; 0 while not yet set.
#[derive(Default)]
struct Window {
    start_us: AtomicU64,
    end_us: AtomicU64,
}

impl Window {
    fn contains(&self, time_us: u64) -> bool {
        let start = self.start_us.load(Ordering::Relaxed);
        let end = self.end_us.load(Ordering::Relaxed);
        start != 0 && time_us >= start && (end == 0 || time_us < end)
    }
}

/// What one healthy viewer saw.
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    frames_outside_window: u64,
    late_frames: u64,
    unstamped_frames: u64,
    json_messages: u64,
    /// BINARY messages that are not frames (extended messages of another kind).
    other_binary_messages: u64,
    latencies_us: Vec<u32>,
    closed_early: Option<String>,
    /// With `--video`.
    video: Option<VideoTally>,
}

impl Tally {
    fn on_frame(
        &mut self,
        stamp: Option<(u64, u64)>,
        len: usize,
        window: &Window,
        deadline_us: u64,
    ) {
        let Some((_seq, time_us)) = stamp else {
            self.unstamped_frames += 1;
            return;
        };
        if !window.contains(time_us) {
            self.frames_outside_window += 1;
            return;
        }
        let latency_us = wall_clock_us().saturating_sub(time_us);
        self.latencies_us
            .push(latency_us.min(u32::MAX as u64) as u32);
        if latency_us > deadline_us {
            self.late_frames += 1;
            return;
        }
        self.frames += 1;
        self.bytes += len as u64;
    }
}

type Ws = WebSocketStream<TcpStream>;

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {message}");
    std::process::exit(2)
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

/// `ws://host:port/path` → the socket address.
fn address_of(url: &str) -> SocketAddr {
    let rest = url
        .strip_prefix("ws://")
        .unwrap_or_else(|| fail("--url must be ws://host:port/path"));
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .parse()
        .unwrap_or_else(|_| fail(format!("--url: {authority} is not an ip:port")))
}

async fn connect(plan: &Plan) -> Result<Ws, String> {
    let stream = TcpStream::connect(plan.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let config = WebSocketConfig::default()
        .read_buffer_size(256 * 1024)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let mut request = plan
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    if let Some(protocol) = &plan.protocol {
        let value = HeaderValue::from_str(protocol).map_err(|e| format!("--protocol: {e}"))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    // With a protocol offered, tungstenite fails the handshake unless the server echoes it.
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Reads one healthy viewer until told to stop.
async fn run_viewer(
    mut ws: Ws,
    wire: Wire,
    window: Arc<Window>,
    deadline_us: u64,
    video: bool,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally {
        video: video.then(VideoTally::default),
        ..Tally::default()
    };
    loop {
        let message = tokio::select! {
            _ = stop.changed() => break,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let bytes = text.as_bytes();
                if bytes.first() == Some(&b'{') {
                    tally.json_messages += 1;
                    if let Some(video) = tally.video.as_mut() {
                        if !video.config_sent && text.contains("\"session-meta\"") {
                            video.config_sent = true;
                            if let Err(e) = ws.send(Message::text(VIDEO_CONFIG)).await {
                                tally.closed_early = Some(format!("sending config: {e}"));
                                break;
                            }
                        } else if text.contains("\"video-config\"") {
                            video.video_configs += 1;
                        } else if text.contains("\"error\"") {
                            video.errors += 1;
                            if video.first_error.is_none() {
                                video.first_error = Some(text.chars().take(200).collect());
                            }
                        }
                    }
                } else {
                    tally.on_frame(parse_stamp_base64(bytes), bytes.len(), &window, deadline_us);
                }
            }
            Some(Ok(Message::Binary(bytes))) => {
                if let Some(video) = tally.video.as_mut() {
                    if let Some(chunk) = parse_chunk_header(&bytes) {
                        video.on_chunk(
                            chunk,
                            bytes.len(),
                            &window,
                            deadline_us,
                            &mut tally.latencies_us,
                        );
                        continue;
                    }
                    if wire.frame_image(&bytes).is_some() {
                        if video.chunks_total == 0 {
                            video.jpeg_before_video += 1;
                        } else {
                            video.jpeg_after_video += 1;
                        }
                        continue;
                    }
                }
                match wire.frame_image(&bytes) {
                    Some(image) => {
                        tally.on_frame(parse_stamp_bytes(image), bytes.len(), &window, deadline_us)
                    }
                    None => tally.other_binary_messages += 1,
                }
            }
            Some(Ok(Message::Close(frame))) => {
                tally.closed_early = Some(format!("closed by server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tally.closed_early = Some(e.to_string());
                break;
            }
            None => {
                tally.closed_early = Some("connection ended".into());
                break;
            }
        }
    }
    tally
}

/// Times `GET path` on one keep-alive connection every `interval` until told to stop.
async fn run_pings(
    plan: Arc<Plan>,
    path: String,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u32>, u64) {
    let mut latencies = Vec::new();
    let mut failures = 0u64;
    let mut connection: Option<TcpStream> = None;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    loop {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), async {
            if connection.is_none() {
                let stream = TcpStream::connect(plan.addr).await?;
                stream.set_nodelay(true)?;
                connection = Some(stream);
            }
            let stream = connection
                .as_mut()
                .ok_or(std::io::ErrorKind::NotConnected)?;
            stream.write_all(request.as_bytes()).await?;
            read_http_response(stream).await
        })
        .await;
        match result {
            Ok(Ok(())) => {
                latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32)
            }
            _ => {
                failures += 1;
                connection = None;
            }
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(plan.ping_interval) => {}
        }
    }
    (latencies, failures)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body).
async fn read_http_response(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(std::io::Error::other("status is not 200"));
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while buffer.len() < header_end + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            while !buffer[header_end..].ends_with(b"0\r\n\r\n") {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
        }
    }
    Ok(())
}

/// How long a new viewer waits from TCP connect to its first frame.
async fn first_frame_time(plan: &Plan) -> Option<f64> {
    let started = Instant::now();
    let attempt = async {
        let mut ws = connect(plan).await.ok()?;
        while let Some(Ok(message)) = ws.next().await {
            let is_frame = match &message {
                Message::Text(text) => !text.as_bytes().starts_with(b"{"),
                Message::Binary(bytes) => plan.wire.frame_image(bytes).is_some(),
                _ => false,
            };
            if is_frame {
                return Some(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0)
}

async fn run(plan: Arc<Plan>) -> serde_json::Value {
    let window = Arc::new(Window::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let connect_started = Instant::now();
    let connect_deadline = tokio::time::Instant::now() + plan.connect_phase;

    // Connect everyone; healthy viewers start reading at once, stalled ones are only held.
    let mut connecting = Vec::new();
    for index in 0..plan.viewers + plan.stalled {
        let plan = plan.clone();
        let gate = gate.clone();
        connecting.push(tokio::spawn(async move {
            let attempt = async {
                let _permit = gate.acquire().await.ok()?;
                Some(connect(&plan).await)
            };
            let result = tokio::time::timeout_at(connect_deadline, attempt).await;
            let result = result.unwrap_or_else(|_| Some(Err("connect phase over".into())))?;
            Some((index, result))
        }));
    }
    let mut readers = Vec::new();
    let mut stalled = Vec::new();
    let mut connect_errors: Vec<String> = Vec::new();
    for attempt in connecting {
        match attempt.await.ok().flatten() {
            Some((index, Ok(ws))) if index < plan.viewers => {
                let tally = run_viewer(
                    ws,
                    plan.wire,
                    window.clone(),
                    plan.deadline_us,
                    plan.video,
                    stop_rx.clone(),
                );
                readers.push(tokio::spawn(tally));
            }
            Some((_, Ok(ws))) => stalled.push(ws),
            Some((_, Err(e))) => connect_errors.push(e),
            None => connect_errors.push("connect task failed".into()),
        }
    }
    let connect_ms = connect_started.elapsed().as_secs_f64() * 1000.0;
    emit(
        json!({"event": "connected", "healthy": readers.len(), "stalled": stalled.len(),
        "failed": connect_errors.len(), "connectMs": connect_ms}),
    );

    tokio::time::sleep(plan.warmup).await;
    let cpu_start = process_cpu_seconds();
    let start_us = wall_clock_us();
    window.start_us.store(start_us, Ordering::Relaxed);
    emit(json!({"event": "window_start", "timeUs": start_us}));
    let pings = plan
        .ping_path
        .clone()
        .map(|path| tokio::spawn(run_pings(plan.clone(), path, stop_rx.clone())));
    tokio::time::sleep(plan.window).await;
    let end_us = wall_clock_us();
    let cpu_end = process_cpu_seconds();
    window.end_us.store(end_us, Ordering::Relaxed);
    emit(json!({"event": "window_end", "timeUs": end_us}));
    tokio::time::sleep(plan.grace).await;
    let _ = stop_tx.send(true);

    let mut tallies = Vec::new();
    for reader in readers {
        if let Ok(tally) = reader.await {
            tallies.push(tally);
        }
    }
    let (mut ping_latencies, ping_failures) = match pings {
        Some(task) => task.await.unwrap_or_default(),
        None => (Vec::new(), 0),
    };
    drop(stalled);

    let mut first_frames = Vec::new();
    for _ in 0..plan.first_frame_probes {
        first_frames.push(first_frame_time(&plan).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let window_secs = (end_us - start_us) as f64 / 1e6;
    let video = plan.video.then(|| video_summary(&tallies));
    // With video, what a viewer should get is what the server made in the window.
    let expected = match &video {
        Some(v) => (v.made as f64).max(1.0),
        None => (window_secs * plan.fps).round().max(1.0),
    };
    let mut latencies: Vec<u32> = Vec::new();
    let mut fractions: Vec<f64> = Vec::new();
    let (mut frames, mut bytes, mut outside, mut unstamped, mut closed_early) = (0, 0, 0, 0, 0);
    let (mut late, mut json_messages, mut other_binary) = (0, 0, 0);
    let mut close_reasons: Vec<String> = Vec::new();
    for tally in &tallies {
        let (viewer_frames, viewer_bytes) = match &tally.video {
            Some(v) => (v.chunks, v.bytes),
            None => (tally.frames, tally.bytes),
        };
        frames += viewer_frames;
        bytes += viewer_bytes;
        outside += tally.frames_outside_window;
        late += tally.late_frames;
        unstamped += tally.unstamped_frames;
        json_messages += tally.json_messages;
        other_binary += tally.other_binary_messages;
        fractions.push((viewer_frames as f64 / expected).min(1.0));
        latencies.extend_from_slice(&tally.latencies_us);
        if let Some(reason) = &tally.closed_early {
            closed_early += 1;
            if close_reasons.len() < 3 {
                close_reasons.push(reason.clone());
            }
        }
    }
    latencies.sort_unstable();
    ping_latencies.sort_unstable();
    fractions.sort_by(f64::total_cmp);
    let requested = plan.viewers as f64;
    // Viewers that failed to connect count as receiving nothing.
    let delivered = frames as f64 / (requested * expected);
    let probes: Vec<f64> = first_frames.iter().flatten().copied().collect();
    let cpu_window = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let video_json = video.map(|v| {
        json!({
            "chunksMadeInWindow": v.made,
            "lowestChunk": v.lowest,
            "highestChunk": v.highest,
            "chunksDelivered": frames,
            "chunksReceivedTotal": v.received_total,
            "lateChunks": v.late,
            "chunksOutsideWindow": v.outside,
            "gaps": v.gaps,
            "skippedChunks": v.skipped,
            "gapsInWindow": v.gaps_in_window,
            "skippedChunksInWindow": v.skipped_in_window,
            "viewersWithGaps": v.viewers_with_gaps,
            "keyframes": v.keyframes,
            "keyframesPerViewer": if tallies.is_empty() { 0.0 } else { v.keyframes as f64 / tallies.len() as f64 },
            "refinements": v.refinements,
            "videoConfigs": v.video_configs,
            "configsSent": v.configs_sent,
            "viewersWithoutVideo": v.without_video,
            "jpegFramesBeforeVideo": v.jpeg_before,
            "jpegFramesAfterVideo": v.jpeg_after,
            "errors": v.errors,
            "errorSamples": v.error_samples,
            "chunksPerSecond": v.made as f64 / window_secs,
            "bytesPerViewerPerSecond": if tallies.is_empty() { 0.0 } else { bytes as f64 / tallies.len() as f64 / window_secs },
        })
    });
    json!({
        "video": video_json,
        "loadgenCpu": {
            "windowSeconds": cpu_window,
            "windowPct": cpu_window.map(|s| 100.0 * s / window_secs),
            "totalSeconds": process_cpu_seconds(),
        },
        "event": "result",
        "viewers": plan.viewers,
        "stalled": plan.stalled,
        "protocol": plan.protocol,
        "connected": tallies.len(),
        "connectErrors": connect_errors.len(),
        "connectErrorSamples": connect_errors.iter().take(3).collect::<Vec<_>>(),
        "connectMs": connect_ms,
        "windowSecs": window_secs,
        "expectedFramesPerViewer": expected,
        "framesDelivered": frames,
        "bytesDelivered": bytes,
        "framesOutsideWindow": outside,
        "lateFrames": late,
        "deadlineMs": plan.deadline_us / 1000,
        "unstampedFrames": unstamped,
        "jsonMessages": json_messages,
        "otherBinaryMessages": other_binary,
        "deliveredFraction": delivered.min(1.0),
        "viewerFractionMin": fractions.first().copied(),
        "viewerFractionP1": fractions.get(fractions.len() / 100).copied(),
        "latencyMs": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().map(|v| *v as f64 / 1000.0),
        },
        "pingMs": {
            "count": ping_latencies.len(),
            "failures": ping_failures,
            "p50": percentile(&ping_latencies, 50.0),
            "p99": percentile(&ping_latencies, 99.0),
        },
        "firstFrameMs": {
            "probes": plan.first_frame_probes,
            "answered": probes.len(),
            "values": probes,
        },
        "closedEarly": closed_early,
        "closeSamples": close_reasons,
    })
}

/// The video tallies of all viewers, added up.
#[derive(Default)]
struct VideoSummary {
    made: u64,
    lowest: Option<u32>,
    highest: Option<u32>,
    received_total: u64,
    late: u64,
    outside: u64,
    gaps: u64,
    skipped: u64,
    gaps_in_window: u64,
    skipped_in_window: u64,
    viewers_with_gaps: u64,
    keyframes: u64,
    refinements: u64,
    video_configs: u64,
    configs_sent: u64,
    without_video: u64,
    jpeg_before: u64,
    jpeg_after: u64,
    errors: u64,
    error_samples: Vec<String>,
}

fn video_summary(tallies: &[Tally]) -> VideoSummary {
    let mut s = VideoSummary::default();
    for v in tallies.iter().filter_map(|t| t.video.as_ref()) {
        if let Some(n) = v.min_number {
            s.lowest = Some(s.lowest.map_or(n, |m| m.min(n)));
        }
        if let Some(n) = v.max_number {
            s.highest = Some(s.highest.map_or(n, |m| m.max(n)));
        }
        s.received_total += v.chunks_total;
        s.late += v.late_chunks;
        s.outside += v.chunks_outside_window;
        s.gaps += v.gaps;
        s.skipped += v.skipped;
        s.gaps_in_window += v.gaps_in_window;
        s.skipped_in_window += v.skipped_in_window;
        s.viewers_with_gaps += (v.gaps_in_window > 0) as u64;
        s.keyframes += v.keyframes;
        s.refinements += v.refinements;
        s.video_configs += v.video_configs;
        s.configs_sent += v.config_sent as u64;
        s.without_video += (v.chunks_total == 0) as u64;
        s.jpeg_before += v.jpeg_before_video;
        s.jpeg_after += v.jpeg_after_video;
        s.errors += v.errors;
        if let Some(e) = &v.first_error {
            if s.error_samples.len() < 3 {
                s.error_samples.push(e.clone());
            }
        }
    }
    s.made = match (s.lowest, s.highest) {
        (Some(lo), Some(hi)) => hi.wrapping_sub(lo) as u64 + 1,
        _ => 0,
    };
    s
}

fn main() {
    let args = Args::from_env();
    let url = args.text("url", "");
    if url.is_empty() {
        fail("usage: loadgen --url ws://127.0.0.1:PORT/browser/ID/stream --viewers N [--protocol browser-stream.v1] [--stalled S] [--fps 30] [--warmup-ms 2000] [--window-ms 8000] [--deadline-ms 1000] [--connect-phase-ms 60000] [--connect-concurrency 64] [--ping-path /ping] [--ping-interval-ms 50] [--first-frame-probes 5] [--threads 1] [--max-seconds 300] [--video]");
    }
    let ping_path = args.text("ping-path", "");
    let deadline_ms: u64 = args.number("deadline-ms", 1000);
    let video = args.text("video", "false") == "true";
    let protocol = args.text("protocol", "");
    // Video is only on the extended wire.
    let protocol = if protocol.is_empty() && video {
        bsn_bench::EXTENDED_PROTOCOL.to_string()
    } else {
        protocol
    };
    let protocol = (!protocol.is_empty()).then_some(protocol);
    if video && protocol.as_deref() != Some(bsn_bench::EXTENDED_PROTOCOL) {
        fail(format!(
            "--video needs --protocol {}",
            bsn_bench::EXTENDED_PROTOCOL
        ));
    }
    let wire = Wire::for_protocol(protocol.as_deref()).unwrap_or_else(|| {
        fail(format!(
            "--protocol: only {} is known",
            bsn_bench::EXTENDED_PROTOCOL
        ))
    });
    let plan = Arc::new(Plan {
        addr: address_of(&url),
        url,
        protocol,
        wire,
        viewers: args.number("viewers", 100),
        stalled: args.number("stalled", 0),
        fps: args.number("fps", 30.0),
        warmup: Duration::from_millis(args.number("warmup-ms", 2000)),
        window: Duration::from_millis(args.number("window-ms", 8000)),
        // Frames of the window may arrive until their deadline.
        grace: Duration::from_millis(deadline_ms),
        connect_concurrency: args.number("connect-concurrency", 64),
        ping_path: (!ping_path.is_empty()).then_some(ping_path),
        ping_interval: Duration::from_millis(args.number("ping-interval-ms", 50)),
        first_frame_probes: args.number("first-frame-probes", 5),
        deadline_us: deadline_ms * 1000,
        connect_phase: Duration::from_millis(args.number("connect-phase-ms", 60_000)),
        video,
    });
    let threads: usize = args.number("threads", 1);
    let max_seconds: u64 = args.number("max-seconds", 300);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(max_seconds));
        eprintln!("loadgen: gave up after {max_seconds} s");
        std::process::exit(3);
    });
    let runtime = bsn_bench::runtime(threads).unwrap_or_else(|e| fail(format!("runtime: {e}")));
    let result = runtime.block_on(run(plan));
    emit(result);
    // Sockets are dropped by the exit; the servers see resets, which is fine for a benchmark.
    std::process::exit(0);
}
