//! A frame source that runs wholly in Rust: prerecorded images replayed in a loop at a fixed
//! rate. It serves demos without a browser and the benchmark, which uses it to separate the
//! cost of pushing frames from JS from the cost of fanning them out.
//!
//! Owns: the replay task of one source session, its schedule, and the optional stamp written
//! into each frame (a JPEG comment `bsn:seq=…;t=…;` right after the start-of-image marker) so a
//! receiver can measure latency from the frame's scheduled capture time. Must not touch sockets
//! or viewers: it publishes through [`Registry::push_frame`] like any other source, and stops by
//! itself when the registry calls its generation stale.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::{Instant, MissedTickBehavior};

use crate::clock::wall_clock_us;
use crate::frame::{check_base64_image, FrameMeta};
use crate::registry::{PushOutcome, Registry};

/// Bytes of the stamped head of a frame: SOI, a COM segment header and its 42-byte payload.
/// A multiple of 3, so its base64 joins the base64 of the rest of the image without padding.
pub const STAMP_HEAD_BYTES: usize = 48;
/// Length of the stamp comment's payload.
const STAMP_PAYLOAD_BYTES: usize = STAMP_HEAD_BYTES - 6;

/// Highest replay rate accepted.
pub const MAX_REPLAY_FPS: f64 = 240.0;

/// How one replay session runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplaySchedule {
    /// Frames per second.
    pub fps: f64,
    /// Write the `bsn:seq=…;t=…;` stamp into each frame (JPEG only).
    pub stamp: bool,
    /// Device size reported with each frame (0 when unknown).
    pub width: f64,
    /// Device height reported with each frame (0 when unknown).
    pub height: f64,
}

/// Why a set of replay images or a schedule is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayError {
    /// No images given.
    NoImages,
    /// An image is not a JPEG, PNG or WebP (by its magic bytes).
    NotAnImage(usize),
    /// Stamping asks for JPEG images; this one is not.
    StampNeedsJpeg(usize),
    /// The rate is not a number in (0, 240].
    BadRate,
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::NoImages => write!(f, "replay needs at least one image"),
            ReplayError::NotAnImage(i) => {
                write!(f, "replay image {i} is not a JPEG, PNG or WebP image")
            }
            ReplayError::StampNeedsJpeg(i) => {
                write!(f, "stampFrames needs JPEG images; image {i} is not one")
            }
            ReplayError::BadRate => write!(f, "fps must be a number above 0 and at most 240"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// One prerecorded image, base64-encoded once.
#[derive(Debug, Clone)]
struct ReplayImage {
    /// base64 of the whole image, published as is when not stamping.
    whole: Bytes,
    /// base64 of the image after its 2-byte start-of-image marker (stamping only).
    after_soi: Bytes,
}

/// The images of a replay, validated and encoded once.
#[derive(Debug, Clone)]
pub struct ReplayImages {
    images: Arc<[ReplayImage]>,
    stamp: bool,
}

impl ReplayImages {
    /// Validates and encodes `images` (raw JPEG/PNG/WebP bytes).
    pub fn new<I, B>(images: I, stamp: bool) -> Result<ReplayImages, ReplayError>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut encoded = Vec::new();
        for (index, image) in images.into_iter().enumerate() {
            let image = image.as_ref();
            let whole = Bytes::from(engine.encode(image));
            if check_base64_image(&whole).is_err() {
                return Err(ReplayError::NotAnImage(index));
            }
            let after_soi = if stamp {
                if !image.starts_with(&[0xff, 0xd8]) {
                    return Err(ReplayError::StampNeedsJpeg(index));
                }
                Bytes::from(engine.encode(&image[2..]))
            } else {
                Bytes::new()
            };
            encoded.push(ReplayImage { whole, after_soi });
        }
        if encoded.is_empty() {
            return Err(ReplayError::NoImages);
        }
        Ok(ReplayImages {
            images: encoded.into(),
            stamp,
        })
    }

    /// The base64 text of frame `slot` (0-based) scheduled at `time_us` (µs since the epoch).
    pub fn frame_text(&self, slot: u64, time_us: u64) -> Bytes {
        let image = &self.images[(slot % self.images.len() as u64) as usize];
        if !self.stamp {
            return image.whole.clone();
        }
        let head = stamp_head(slot + 1, time_us);
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut text = BytesMut::with_capacity(STAMP_HEAD_BYTES / 3 * 4 + image.after_soi.len());
        text.put_slice(engine.encode(head).as_bytes());
        text.put_slice(&image.after_soi);
        text.freeze()
    }
}

/// The 48-byte stamped head: SOI, then a COM segment `bsn:seq=<10 digits>;t=<16 digits>;`
/// padded with spaces. Fixed widths keep the head a constant length.
pub fn stamp_head(seq: u64, time_us: u64) -> [u8; STAMP_HEAD_BYTES] {
    let mut head = [b' '; STAMP_HEAD_BYTES];
    head[..4].copy_from_slice(&[0xff, 0xd8, 0xff, 0xfe]);
    head[4..6].copy_from_slice(&((STAMP_PAYLOAD_BYTES + 2) as u16).to_be_bytes());
    let tag = format!(
        "bsn:seq={:010};t={:016};",
        seq % 10_000_000_000,
        time_us % 10_000_000_000_000_000
    );
    head[6..6 + tag.len()].copy_from_slice(tag.as_bytes());
    head
}

/// Microseconds since the Unix epoch of `SystemTime::now()`.
/// Checks a schedule's rate.
pub fn check_schedule(schedule: &ReplaySchedule) -> Result<(), ReplayError> {
    if !(schedule.fps.is_finite() && schedule.fps > 0.0 && schedule.fps <= MAX_REPLAY_FPS) {
        return Err(ReplayError::BadRate);
    }
    Ok(())
}

/// Runs the replay of `images` for the source session `generation` of channel `key` until the
/// registry no longer takes its frames (the session stopped, the channel went away or the
/// registry closed). Frames are scheduled on a fixed grid; a late task catches up in a burst,
/// as a browser's queued screencast frames would arrive. The caller sets the session's status.
pub async fn run_replay(
    registry: Arc<Registry>,
    key: String,
    generation: u32,
    images: ReplayImages,
    schedule: ReplaySchedule,
) {
    let period = Duration::from_secs_f64(1.0 / schedule.fps);
    let start = Instant::now();
    let start_us = wall_clock_us();
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let meta = FrameMeta {
        device_width: schedule.width,
        device_height: schedule.height,
        page_scale_factor: 1.0,
        ..FrameMeta::default()
    };
    for slot in 0u64.. {
        let due = ticks.tick().await;
        let due_us = start_us + due.duration_since(start).as_micros() as u64;
        let text = images.frame_text(slot, due_us);
        let meta = FrameMeta {
            timestamp_ms: due_us as f64 / 1000.0,
            ..meta
        };
        match registry.push_frame(&key, Some(generation), text, meta) {
            PushOutcome::Published(_) | PushOutcome::Rejected(_) | PushOutcome::Withheld => {}
            PushOutcome::NoChannel | PushOutcome::Stale => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::registry_with;
    use crate::registry::{ChannelId, JoinOptions, RegistryConfig, Transport};

    const JPEG: &[u8] = &[0xff, 0xd8, 0xff, 0xe0, 0, 4, 1, 2, 0xff, 0xd9];

    #[test]
    fn stamp_head_is_a_jpeg_comment_with_fixed_width_fields() {
        let head = stamp_head(42, 1_732_000_000_123_456);
        assert_eq!(&head[..4], &[0xff, 0xd8, 0xff, 0xfe]);
        assert_eq!(u16::from_be_bytes([head[4], head[5]]) as usize, 44);
        let tag = std::str::from_utf8(&head[6..]).expect("ascii");
        assert_eq!(tag.trim_end(), "bsn:seq=0000000042;t=1732000000123456;");
    }

    #[test]
    fn stamped_text_is_the_base64_of_the_stamped_image() {
        let images = ReplayImages::new([JPEG], true).expect("valid");
        let text = images.frame_text(6, 99);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .expect("base64");
        assert_eq!(&decoded[..STAMP_HEAD_BYTES], &stamp_head(7, 99));
        assert_eq!(&decoded[STAMP_HEAD_BYTES..], &JPEG[2..]);
        assert!(check_base64_image(&text).is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_replay() {
        let none: [&[u8]; 0] = [];
        assert_eq!(
            ReplayImages::new(none, false).err(),
            Some(ReplayError::NoImages)
        );
        assert_eq!(
            ReplayImages::new([b"{not an image}".as_slice()], false).err(),
            Some(ReplayError::NotAnImage(0))
        );
        let png = b"\x89PNG\r\n\x1a\n0000";
        assert!(ReplayImages::new([png.as_slice()], false).is_ok());
        assert_eq!(
            ReplayImages::new([JPEG, png.as_slice()], true).err(),
            Some(ReplayError::StampNeedsJpeg(1))
        );
        for fps in [0.0, -1.0, f64::NAN, 241.0] {
            let schedule = ReplaySchedule {
                fps,
                stamp: false,
                width: 0.0,
                height: 0.0,
            };
            assert_eq!(check_schedule(&schedule), Err(ReplayError::BadRate));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn replays_until_its_session_goes_stale() {
        let (registry, host) = registry_with(RegistryConfig::default());
        let id = ChannelId::new("agent", None);
        let viewer = registry
            .admit_with(&id, Transport::Native, JoinOptions::compat(true))
            .expect("admitted");
        let generation = host.starts.lock().expect("lock")[0].generation;
        let images = ReplayImages::new([JPEG], true).expect("valid");
        let schedule = ReplaySchedule {
            fps: 10.0,
            stamp: true,
            width: 800.0,
            height: 600.0,
        };
        let task = tokio::spawn(run_replay(
            registry.clone(),
            "agent".into(),
            generation,
            images,
            schedule,
        ));
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let frame = viewer.frames.borrow().clone().expect("a frame");
        assert_eq!(frame.index, 11, "frames at 0, 100, …, 1000 ms");
        assert_eq!(frame.meta.device_width, 800.0);
        registry.close();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the replay stops once its session is gone")
            .expect("no panic");
    }
}
