//! An image a request sends, decoded: PNG, JPEG, GIF (its first frame) or WebP by their bytes
//! (not by what the URL or media type claims), within size limits, to 8-bit RGB as Pillow's
//! `convert("RGB")` makes it (alpha dropped, grey spread to three channels).

use std::hash::{Hash, Hasher};
use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits};

use super::VisionError;
use super::resample::Rgb;

/// Most pixels an image may have (a 16-megapixel phone photo fits; decoding allocates 3 bytes
/// a pixel, and every image is resized down before the model sees it).
pub const MAX_PIXELS: u64 = 50_000_000;
/// Longest side in pixels.
pub const MAX_SIDE: u32 = 16_384;

/// A decoded image and what identifies its content (a hash of its pixels).
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub rgb: Rgb,
    pub key: u64,
}

/// Decodes `bytes`.
pub fn decode(bytes: &[u8]) -> Result<DecodedImage, VisionError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| VisionError::Image(format!("the image cannot be read: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(VisionError::Image(format!("{other:?} images are not supported; send PNG, JPEG, GIF or WebP")));
        }
        None => {
            return Err(VisionError::Image("not an image in a supported format (PNG, JPEG, GIF or WebP)".into()));
        }
    }
    let (width, height) =
        reader.into_dimensions().map_err(|e| VisionError::Image(format!("the image's header cannot be read: {e}")))?;
    check_size(width, height)?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| VisionError::Image(format!("the image cannot be read: {e}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| VisionError::Image(format!("the image cannot be decoded: {e}")))?;
    let rgb = decoded.to_rgb8();
    let (width, height) = rgb.dimensions();
    let data = rgb.into_raw();
    let mut hasher = std::hash::DefaultHasher::new();
    (width, height).hash(&mut hasher);
    data.hash(&mut hasher);
    Ok(DecodedImage { rgb: Rgb { width: width as usize, height: height as usize, data }, key: hasher.finish() })
}

fn check_size(width: u32, height: u32) -> Result<(), VisionError> {
    if width == 0 || height == 0 {
        return Err(VisionError::Image("the image has no pixels".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(VisionError::Image(format!(
            "the image is {width}×{height}: at most {MAX_SIDE} pixels a side and {MAX_PIXELS} in all are accepted"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([x as u8, y as u8, 7, 128]));
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).expect("encode");
        out.into_inner()
    }

    #[test]
    fn alpha_is_dropped_and_the_same_pixels_give_the_same_key() {
        let a = decode(&png(3, 2)).expect("decodes");
        assert_eq!((a.rgb.width, a.rgb.height), (3, 2));
        assert_eq!(&a.rgb.data[3..6], &[1, 0, 7]);
        assert_eq!(decode(&png(3, 2)).expect("decodes").key, a.key);
        assert_ne!(decode(&png(2, 3)).expect("decodes").key, a.key);
    }

    #[test]
    fn truncated_foreign_and_empty_input_are_errors() {
        let whole = png(8, 8);
        assert!(decode(&whole[..whole.len() / 2]).is_err());
        let svg = br#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>"#;
        let err = decode(svg).expect_err("svg");
        assert!(err.to_string().contains("PNG, JPEG, GIF or WebP"), "{err}");
        assert!(decode(b"").is_err());
    }
}
