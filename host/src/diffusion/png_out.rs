//! Generated images as PNG files (the `png` crate), with text chunks saying how each was made
//! (`parameters` in the form A1111's web UI writes, and the `seed` alone), so a picture can be
//! made again from the file.

use super::{DiffusionError, RgbImage};

/// `image` as a PNG holding `chunks` (keyword, text) as `tEXt` chunks.
pub fn encode(image: &RgbImage, chunks: &[(&str, String)]) -> Result<Vec<u8>, DiffusionError> {
    let fail = |e: png::EncodingError| DiffusionError::Io(format!("encoding the PNG: {e}"));
    let (width, height) = (u32::try_from(image.width), u32::try_from(image.height));
    let (Ok(width), Ok(height)) = (width, height) else {
        return Err(DiffusionError::Request("the image is too large for a PNG".into()));
    };
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (keyword, text) in chunks {
            encoder.add_text_chunk((*keyword).to_owned(), text.clone()).map_err(fail)?;
        }
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&image.data).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(out)
}
