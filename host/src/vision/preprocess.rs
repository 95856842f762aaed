//! An image processor as a model's Hugging Face processor config describes it (CLIP's and
//! LLaVA's: resize to a shortest edge or a fixed size, centre crop, rescale, normalise),
//! computed as the processor's Pillow backend computes it — Pillow's resampling on bytes, the
//! rescale in f64 then f32, the normalisation in f32 — so the pixel values match to the last bit.

use serde::Deserialize;
use serde_json::Value;

use super::VisionError;
use super::resample::{Filter, Rgb};

/// Pixel values `[3, height, width]`, channel-first as the vision tower takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

/// A target size: `{"shortest_edge": n}` or `{"height": h, "width": w}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    ShortestEdge(usize),
    Exact { height: usize, width: usize },
}

#[derive(Debug, Deserialize)]
struct RawSize {
    shortest_edge: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
}

impl Size {
    fn parse(v: &Value, field: &str) -> Result<Self, VisionError> {
        // Older configs give a bare number for a square.
        if let Some(n) = v.as_u64() {
            let n = n as usize;
            return Ok(Self::Exact { height: n, width: n });
        }
        let raw: RawSize =
            serde_json::from_value(v.clone()).map_err(|e| VisionError::Config(format!("`{field}`: {e}")))?;
        match raw {
            RawSize { shortest_edge: Some(n), .. } if n > 0 => Ok(Self::ShortestEdge(n)),
            RawSize { height: Some(height), width: Some(width), .. } if height > 0 && width > 0 => {
                Ok(Self::Exact { height, width })
            }
            _ => Err(VisionError::Config(format!("`{field}` must give `shortest_edge` or `height` and `width`"))),
        }
    }
}

/// The processor's settings (`image_processor` in `processor_config.json`, or the whole of an
/// older `preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    pub resize: Option<(Size, Filter)>,
    pub crop: Option<(usize, usize)>,
    pub rescale: Option<f64>,
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl ImageProcessor {
    /// Reads the processor's fields; absent ones take CLIP's defaults, as the processor class does.
    pub fn from_json(v: &Value) -> Result<Self, VisionError> {
        let flag = |name: &str| v.get(name).and_then(Value::as_bool).unwrap_or(true);
        let triple = |name: &str, default: [f32; 3]| -> Result<[f32; 3], VisionError> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => Ok([n.as_f64().unwrap_or(0.0) as f32; 3]),
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0.0f32; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or_else(|| VisionError::Config(format!("`{name}` must hold numbers")))?
                            as f32;
                    }
                    Ok(out)
                }
                Some(_) => Err(VisionError::Config(format!("`{name}` must be a number or three"))),
            }
        };
        let resize = if flag("do_resize") {
            let size = Size::parse(v.get("size").unwrap_or(&Value::Null), "size")?;
            let filter = Filter::from_pil(v.get("resample").and_then(Value::as_u64).unwrap_or(3))?;
            Some((size, filter))
        } else {
            None
        };
        let crop = if flag("do_center_crop") {
            match Size::parse(v.get("crop_size").unwrap_or(&Value::Null), "crop_size")? {
                Size::Exact { height, width } => Some((height, width)),
                Size::ShortestEdge(n) => Some((n, n)),
            }
        } else {
            None
        };
        let rescale =
            flag("do_rescale").then(|| v.get("rescale_factor").and_then(Value::as_f64).unwrap_or(1.0 / 255.0));
        let normalize = if flag("do_normalize") {
            Some((triple("image_mean", CLIP_MEAN)?, triple("image_std", CLIP_STD)?))
        } else {
            None
        };
        if let Some((_, std)) = normalize
            && std.contains(&0.0)
        {
            return Err(VisionError::Config("`image_std` may not hold 0".into()));
        }
        Ok(Self { resize, crop, rescale, normalize })
    }

    /// The pixel values of `image`.
    pub fn pixels(&self, image: &Rgb) -> Pixels {
        let mut image = match self.resize {
            Some((size, filter)) => {
                let (height, width) = resized_size(image.height, image.width, size);
                image.resize(width, height, filter)
            }
            None => image.clone(),
        };
        if let Some((height, width)) = self.crop {
            image = centre_crop(&image, height, width);
        }
        channel_first(&image, self.rescale, self.normalize)
    }
}

/// `image` as channel-first floats, rescaled (in f64, then f32, as transformers' `rescale`)
/// and normalised (in f32, as its `normalize`).
pub fn channel_first(image: &Rgb, rescale: Option<f64>, normalize: Option<([f32; 3], [f32; 3])>) -> Pixels {
    let plane = image.width * image.height;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in image.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let mut v = match rescale {
                Some(factor) => (f64::from(px[c]) * factor) as f32,
                None => f32::from(px[c]),
            };
            if let Some((mean, std)) = normalize {
                v = (v - mean[c]) / std[c];
            }
            data[c * plane + i] = v;
        }
    }
    Pixels { height: image.height, width: image.width, data }
}

/// OpenAI CLIP's normalisation (transformers' `OPENAI_CLIP_MEAN`/`_STD`).
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// transformers' `get_resize_output_image_size` (not square by default): the short side to
/// `n`, the long side scaled and truncated as Python's `int()` does.
fn resized_size(height: usize, width: usize, size: Size) -> (usize, usize) {
    match size {
        Size::Exact { height, width } => (height, width),
        Size::ShortestEdge(n) => {
            let (short, long) = if width <= height { (width, height) } else { (height, width) };
            let new_long = ((n as f64 * long as f64 / short.max(1) as f64) as usize).max(1);
            if width <= height { (new_long, n) } else { (n, new_long) }
        }
    }
}

/// transformers' `center_crop`: the middle `height`×`width`, zero-padded where the image is
/// smaller (its offsets floor, as Python's `//` does).
fn centre_crop(image: &Rgb, height: usize, width: usize) -> Rgb {
    let top = (image.height as i64 - height as i64).div_euclid(2);
    let left = (image.width as i64 - width as i64).div_euclid(2);
    let mut data = vec![0u8; height * width * 3];
    for y in 0..height {
        let sy = y as i64 + top;
        if !(0..image.height as i64).contains(&sy) {
            continue;
        }
        for x in 0..width {
            let sx = x as i64 + left;
            if !(0..image.width as i64).contains(&sx) {
                continue;
            }
            let from = (sy as usize * image.width + sx as usize) * 3;
            data[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&image.data[from..from + 3]);
        }
    }
    Rgb { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_follow_transformers() {
        assert_eq!(resized_size(37, 45, Size::ShortestEdge(32)), (32, 38));
        assert_eq!(resized_size(45, 37, Size::ShortestEdge(32)), (38, 32));
        assert_eq!(resized_size(480, 640, Size::ShortestEdge(336)), (336, 448));
        assert_eq!(resized_size(9, 9, Size::Exact { height: 4, width: 5 }), (4, 5));
    }

    #[test]
    fn a_crop_larger_than_the_image_pads_with_zeros_around_the_middle() {
        let image = Rgb { width: 1, height: 1, data: vec![9, 9, 9] };
        let out = centre_crop(&image, 3, 2);
        // Rows: floor((1-3)/2) = -1 → the pixel lands on row 1; columns: floor(-1/2) = -1 → column 1
        // (transformers pads by ceil((3-1)/2) = 1 and ceil((2-1)/2) = 1).
        assert_eq!(out.data[(2 + 1) * 3], 9);
        assert_eq!(out.data.iter().filter(|&&v| v == 9).count(), 3);
    }

    #[test]
    fn a_config_without_a_size_or_with_a_zero_std_is_refused() {
        assert!(ImageProcessor::from_json(&json!({"do_resize": true})).is_err());
        let zero = json!({"size": 4, "crop_size": 4, "image_std": [1.0, 0.0, 1.0]});
        assert!(ImageProcessor::from_json(&zero).is_err());
        let p = ImageProcessor::from_json(&json!({"size": {"shortest_edge": 4}, "do_center_crop": false})).unwrap();
        assert_eq!(p.crop, None);
        assert_eq!(p.resize, Some((Size::ShortestEdge(4), Filter::Bicubic)));
    }
}
