//! Generated images as PNG files (the `png` crate), with text chunks (`tEXt`, or `iTXt` for text
//! beyond Latin-1) saying how each was made
//! (`parameters` in the form A1111's web UI writes, and the `seed` alone), so a picture can be
//! made again from the file.

use super::{DiffusionError, RgbImage};

/// `image` as a PNG holding `chunks` (keyword, text) as text chunks (NULs dropped).
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
            // tEXt holds Latin-1 without NULs; anything else (a prompt in another script, an
            // emoji) goes into an iTXt chunk, which holds UTF-8.
            let text: String = text.chars().filter(|&c| c != '\0').collect();
            let added = if text.chars().all(|c| u32::from(c) <= 0xFF) {
                encoder.add_text_chunk((*keyword).to_owned(), text)
            } else {
                encoder.add_itxt_chunk((*keyword).to_owned(), text)
            };
            added.map_err(fail)?;
        }
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&image.data).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_prompt_fits_in_a_text_chunk() {
        let image = RgbImage { width: 2, height: 1, data: vec![0, 10, 20, 30, 40, 50] };
        for text in ["plain", "caf\u{e9}", "a \u{2713}\u{1f600} tree", "nul\0inside"] {
            let png = encode(&image, &[("parameters", text.to_owned()), ("seed", "7".into())]).expect("encodes");
            let decoder = png::Decoder::new(std::io::Cursor::new(png));
            let reader = decoder.read_info().expect("a PNG");
            let info = reader.info();
            let found: Vec<String> = info
                .uncompressed_latin1_text
                .iter()
                .map(|c| c.text.clone())
                .chain(info.utf8_text.iter().map(|c| c.get_text().expect("utf-8")))
                .collect();
            assert!(found.contains(&text.replace('\0', "")), "{text:?} not in {found:?}");
        }
    }
}
