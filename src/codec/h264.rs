//! H.264 through OpenH264 (Cisco's encoder, built from the source bundled in `openh264-sys2`;
//! with `nasm` on the build machine its x86 assembly is used too): Constrained Baseline, no
//! B-frames and so no reordering, the screen-content tools and bitrate rate control.
//!
//! Owns: the encoder's configuration (profile, rate control, VUI colour signalling), the
//! refinement encoder (a second instance at a low quantiser, used only for keyframes), and
//! reading the codec string off the stream's SPS. Must not decide when keyframes are due (the
//! pipeline does).

use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, Profile, QpRange,
    RateControlMode, SpsPpsStrategy, UsageType, VuiConfig,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use super::picture::Picture;
use super::{Encoded, EncoderSettings, Quality, VideoEncoder};

/// Frame rate the rate control plans for (Chromium's screencast tops out near 60, usually 30).
const PLANNED_FPS: f32 = 30.0;
/// Quantiser range of refinement keyframes: near-lossless for text.
const REFINE_QP: (u8, u8) = (12, 20);
/// Ceiling of the refinement encoder's bitrate: OpenH264 refuses targets above what level
/// 5.2 allows (288 Mbit/s), and would then fail on every picture.
const REFINE_MAX_BITRATE: u32 = 200_000_000;
/// Quantiser range of live video. The source is already a lossy JPEG: below 28 the bits go to
/// reproducing its artefacts (at 28 the decoded picture is still within ~44 dB PSNR of that
/// JPEG on the demo page, video-decode.test.js), above 44 text smears past reading. A quiet
/// page is sent again at REFINE_QP.
const LIVE_QP: (u8, u8) = (28, 44);

/// The H.264 encoder of one channel.
pub struct H264Encoder {
    settings: EncoderSettings,
    live: Encoder,
    /// Created on the first refinement.
    refine: Option<Encoder>,
    /// The live encoder must start its next picture with an IDR: the decoder's reference is
    /// a refinement keyframe the live encoder never made.
    live_needs_key: bool,
}

fn config(settings: &EncoderSettings, quality: Quality) -> EncoderConfig {
    let (qp, bitrate, mode) = match quality {
        Quality::Live => (LIVE_QP, settings.bitrate, RateControlMode::Bitrate),
        // Quality mode: the quantiser range decides, the bitrate is only a ceiling.
        Quality::Refine => (
            REFINE_QP,
            settings.bitrate.saturating_mul(8).min(REFINE_MAX_BITRATE),
            RateControlMode::Quality,
        ),
    };
    EncoderConfig::new()
        .profile(Profile::Baseline)
        .usage_type(UsageType::ScreenContentRealTime)
        .rate_control_mode(mode)
        .bitrate(BitRate::from_bps(bitrate))
        .max_frame_rate(FrameRate::from_hz(PLANNED_FPS))
        .qp(QpRange::new(qp.0, qp.1))
        // The pipeline decides keyframes: none of the encoder's own.
        .intra_frame_period(openh264::encoder::IntraFramePeriod::from_num_frames(0))
        // What OpenH264's screen-content mode supports (it turns the rest off itself, with a
        // warning on stderr); skipping pictures is how its rate control holds the bitrate,
        // and the pipeline's refinement re-sends the last picture once the page is quiet.
        .scene_change_detect(true)
        .adaptive_quantization(false)
        .background_detection(false)
        .skip_frames(matches!(quality, Quality::Live))
        .sps_pps_strategy(SpsPpsStrategy::ConstantId)
        .complexity(Complexity::Low)
        .num_threads(1)
        .vui(VuiConfig::bt709())
}

impl H264Encoder {
    /// A new encoder with `settings`.
    pub fn new(settings: EncoderSettings) -> Result<Self, String> {
        let live =
            Encoder::with_api_config(OpenH264API::from_source(), config(&settings, Quality::Live))
                .map_err(|e| format!("H.264 encoder: {e}"))?;
        Ok(H264Encoder {
            settings,
            live,
            refine: None,
            live_needs_key: false,
        })
    }
}

fn encode_with(
    encoder: &mut Encoder,
    picture: &Picture,
    key: bool,
) -> Result<Option<Encoded>, String> {
    let (w, h) = (picture.width as usize, picture.height as usize);
    let yuv = YUVSlices::new(
        (&picture.y, &picture.u, &picture.v),
        (w, h),
        (w, w / 2, w / 2),
    );
    if key {
        encoder.force_intra_frame();
    }
    let stream = encoder
        .encode(&yuv)
        .map_err(|e| format!("H.264 encode: {e}"))?;
    let frame_type = stream.frame_type();
    if matches!(frame_type, FrameType::Skip | FrameType::Invalid) {
        return Ok(None);
    }
    let data = stream.to_vec();
    if data.is_empty() {
        return Ok(None);
    }
    Ok(Some(Encoded {
        data,
        key: matches!(frame_type, FrameType::IDR),
    }))
}

impl VideoEncoder for H264Encoder {
    fn encode(
        &mut self,
        picture: &Picture,
        key: bool,
        quality: Quality,
    ) -> Result<Option<Encoded>, String> {
        if picture.width == 0 || picture.height == 0 {
            return Err("empty picture".into());
        }
        match quality {
            Quality::Live => {
                let key = key || self.live_needs_key;
                let encoded = encode_with(&mut self.live, picture, key)?;
                if encoded.as_ref().is_some_and(|e| e.key) {
                    self.live_needs_key = false;
                }
                Ok(encoded)
            }
            Quality::Refine => {
                let refine = match &mut self.refine {
                    Some(refine) => refine,
                    slot => slot.insert(
                        Encoder::with_api_config(
                            OpenH264API::from_source(),
                            config(&self.settings, Quality::Refine),
                        )
                        .map_err(|e| format!("H.264 encoder: {e}"))?,
                    ),
                };
                let encoded = encode_with(refine, picture, true)?;
                if encoded.is_some() {
                    self.live_needs_key = true;
                }
                Ok(encoded)
            }
        }
    }

    fn codec_string(&self, keyframe: &[u8]) -> Option<String> {
        codec_string_of(keyframe)
    }
}

/// `avc1.PPCCLL` from the first SPS (NAL type 7) of an Annex B stream: profile, constraint
/// flags and level, the three bytes after the NAL header.
pub fn codec_string_of(annex_b: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 3 < annex_b.len() {
        let start = if annex_b[at..].starts_with(&[0, 0, 1]) {
            3
        } else if annex_b[at..].starts_with(&[0, 0, 0, 1]) {
            4
        } else {
            at += 1;
            continue;
        };
        let nal = at + start;
        if annex_b.get(nal).is_some_and(|b| b & 0x1F == 7) {
            let sps = annex_b.get(nal + 1..nal + 4)?;
            return Some(format!("avc1.{:02x}{:02x}{:02x}", sps[0], sps[1], sps[2]));
        }
        at = nal;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::picture::tests::fixture_jpeg;
    use crate::codec::picture::PictureDecoder;
    use std::time::Duration;

    fn settings() -> EncoderSettings {
        EncoderSettings {
            bitrate: 2_000_000,
            keyframe_interval: Duration::from_secs(5),
            refine_after: Duration::from_millis(500),
        }
    }

    #[test]
    fn keyframes_carry_a_constrained_baseline_sps_and_deltas_are_smaller() {
        let mut picture = Picture::default();
        PictureDecoder::default()
            .decode(&fixture_jpeg(), &mut picture)
            .unwrap();
        let mut encoder = H264Encoder::new(settings()).unwrap();
        let first = encoder
            .encode(&picture, true, Quality::Live)
            .unwrap()
            .unwrap();
        assert!(first.key);
        let codec = encoder.codec_string(&first.data).unwrap();
        // profile_idc 66 (Baseline) with constraint_set1 (Constrained Baseline).
        assert!(codec.starts_with("avc1.42"), "{codec}");
        let flags = u8::from_str_radix(&codec[7..9], 16).unwrap();
        assert_ne!(flags & 0x40, 0, "constraint_set1_flag: {codec}");
        let delta = encoder
            .encode(&picture, false, Quality::Live)
            .unwrap()
            .unwrap();
        assert!(!delta.key);
        assert!(delta.data.len() < first.data.len() / 4);
    }

    #[test]
    fn a_refinement_is_a_larger_keyframe_and_the_live_stream_restarts_with_one() {
        let mut picture = Picture::default();
        PictureDecoder::default()
            .decode(&fixture_jpeg(), &mut picture)
            .unwrap();
        let mut encoder = H264Encoder::new(settings()).unwrap();
        let live = encoder
            .encode(&picture, true, Quality::Live)
            .unwrap()
            .unwrap();
        let refined = encoder
            .encode(&picture, false, Quality::Refine)
            .unwrap()
            .unwrap();
        assert!(refined.key);
        assert!(refined.data.len() > live.data.len());
        let next = encoder
            .encode(&picture, false, Quality::Live)
            .unwrap()
            .unwrap();
        assert!(
            next.key,
            "the live encoder's references were replaced by the refinement"
        );
    }

    #[test]
    fn the_codec_string_is_read_from_the_sps() {
        let stream = [
            0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1F, 0xAA, 0, 0, 1, 0x68, 0xCE,
        ];
        assert_eq!(codec_string_of(&stream).as_deref(), Some("avc1.42c01f"));
        assert_eq!(codec_string_of(&[0, 0, 1, 0x65, 1, 2, 3]), None);
        assert_eq!(codec_string_of(&[0, 0, 1, 0x67]), None);
    }
}
