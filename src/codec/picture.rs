//! A frame's JPEG turned into the encoder's input: decoded (zune-jpeg) to RGB, then converted
//! (yuvutils-rs) to I420 in BT.709 limited range, the colour space the encoder signals in its
//! VUI so that every decoder shows the colours the page had.
//!
//! Owns: the picture buffers (reused from frame to frame), the even-size crop H.264's 4:2:0
//! needs, and the refusal of images that are not JPEG or larger than the encoder takes. Must
//! not encode (the encoder does) nor know about channels.

use yuvutils_rs::{
    rgb_to_yuv420, BufferStoreMut, YuvConversionMode, YuvPlanarImageMut, YuvRange,
    YuvStandardMatrix,
};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Largest picture side the encoder takes (OpenH264 stops at level 5.2, 3840×2160).
pub const MAX_SIDE: u32 = 3840;
/// Largest short side (2160 for 3840×2160 or 2160×3840).
pub const MAX_SHORT_SIDE: u32 = 2160;

/// An I420 picture: full-size Y plane, quarter-size U and V planes, no padding.
#[derive(Debug, Default)]
pub struct Picture {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Luma, `width × height`.
    pub y: Vec<u8>,
    /// Cb, `width/2 × height/2`.
    pub u: Vec<u8>,
    /// Cr, `width/2 × height/2`.
    pub v: Vec<u8>,
}

/// Decodes frame images into a [`Picture`], keeping its buffers between frames.
#[derive(Default)]
pub struct PictureDecoder {
    rgb: Vec<u8>,
}

impl PictureDecoder {
    /// Decodes `jpeg` into `picture` (cropped to even sides). A peer's bytes: every failure
    /// is an error, never a panic, and `picture` keeps its last good content.
    pub fn decode(&mut self, jpeg: &[u8], picture: &mut Picture) -> Result<(), String> {
        if jpeg.len() < 2 || jpeg[..2] != [0xFF, 0xD8] {
            return Err("the frame is not a JPEG (video needs JPEG frames)".into());
        }
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_max_width(MAX_SIDE as usize)
            .set_max_height(MAX_SIDE as usize);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
        decoder
            .decode_headers()
            .map_err(|e| format!("JPEG header: {e}"))?;
        let (width, height) = decoder
            .dimensions()
            .ok_or_else(|| "JPEG without a size".to_string())?;
        let (full_width, full_height) = (width as u32, height as u32);
        // OpenH264's limit: 3840 on the long side, 2160 on the short one.
        let (long, short) = (full_width.max(full_height), full_width.min(full_height));
        if long > MAX_SIDE || short > MAX_SHORT_SIDE {
            return Err(format!(
                "{full_width}x{full_height} is larger than the encoder takes (3840x2160)"
            ));
        }
        let (even_width, even_height) = (full_width & !1, full_height & !1);
        if even_width == 0 || even_height == 0 {
            return Err(format!("{full_width}x{full_height} is too small to encode"));
        }
        let size = decoder
            .output_buffer_size()
            .ok_or_else(|| "JPEG without a size".to_string())?;
        self.rgb.resize(size, 0);
        decoder
            .decode_into(&mut self.rgb)
            .map_err(|e| format!("JPEG data: {e}"))?;
        if size < full_width as usize * full_height as usize * 3 {
            return Err("the JPEG decoded to fewer pixels than its size".into());
        }
        let luma = even_width as usize * even_height as usize;
        let chroma = luma / 4;
        picture.y.resize(luma, 0);
        picture.u.resize(chroma, 0);
        picture.v.resize(chroma, 0);
        let mut planar = YuvPlanarImageMut {
            y_plane: BufferStoreMut::Borrowed(&mut picture.y),
            y_stride: even_width,
            u_plane: BufferStoreMut::Borrowed(&mut picture.u),
            u_stride: even_width / 2,
            v_plane: BufferStoreMut::Borrowed(&mut picture.v),
            v_stride: even_width / 2,
            width: even_width,
            height: even_height,
        };
        // The RGB rows keep their full width: an odd last column is simply not read.
        rgb_to_yuv420(
            &mut planar,
            &self.rgb,
            full_width * 3,
            YuvRange::Limited,
            YuvStandardMatrix::Bt709,
            YuvConversionMode::Balanced,
        )
        .map_err(|e| {
            // The planes were resized for a picture that is not there: none is held.
            picture.width = 0;
            picture.height = 0;
            format!("colour conversion: {e}")
        })?;
        picture.width = even_width;
        picture.height = even_height;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A JPEG of the crate's test fixtures (a real Chromium screencast frame).
    pub(crate) fn fixture_jpeg() -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/frames");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .expect("examples/frames")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "jpeg"))
            .collect();
        files.sort();
        std::fs::read(files.first().expect("a JPEG in examples/frames")).unwrap()
    }

    #[test]
    fn a_jpeg_becomes_an_even_sized_i420_picture() {
        let jpeg = fixture_jpeg();
        let mut decoder = PictureDecoder::default();
        let mut picture = Picture::default();
        decoder.decode(&jpeg, &mut picture).unwrap();
        assert!(picture.width > 0 && picture.width % 2 == 0);
        assert!(picture.height > 0 && picture.height % 2 == 0);
        assert_eq!(picture.y.len(), (picture.width * picture.height) as usize);
        assert_eq!(picture.u.len() * 4, picture.y.len());
        // Limited range: luma stays within 16..=235.
        assert!(picture.y.iter().all(|&y| (16..=235).contains(&y)));
    }

    #[test]
    fn corrupt_or_foreign_images_are_errors_and_keep_the_last_picture() {
        let jpeg = fixture_jpeg();
        let mut decoder = PictureDecoder::default();
        let mut picture = Picture::default();
        decoder.decode(&jpeg, &mut picture).unwrap();
        let (w, h) = (picture.width, picture.height);
        assert!(decoder.decode(b"\x89PNG\r\n", &mut picture).is_err());
        assert!(
            decoder
                .decode(&jpeg[..jpeg.len() / 3], &mut picture)
                .is_err()
                || picture.width == w
        );
        let mut garbage = jpeg.clone();
        for b in garbage.iter_mut().skip(600).step_by(7) {
            *b = 0xFF;
        }
        let _ = decoder.decode(&garbage, &mut picture);
        assert_eq!((picture.width, picture.height), (w, h));
        assert!(decoder.decode(&[], &mut picture).is_err());
    }
}
