//! SmolVLM / Idefics3 vision: the image resized so its longest edge is the processor's `size`,
//! then to whole tiles of the tower's size, cut into those tiles plus the whole image shrunk to
//! one (Pillow's Lanczos each time, as the processor's Pillow backend does); each tile through
//! a SigLIP tower and its post-norm, pixel-shuffled (`scale_factor`² neighbouring patches into
//! one wider row) and projected to the decoder's width. In the prompt an image becomes
//! Idefics3's layout: `<fake_token_around_image><row_r_col_c>` + the tile's `<image>` tokens for
//! each tile, a line per row of tiles, then `<global-img>` and the whole image's tokens.
//! Read from a Hugging Face folder or from llama.cpp's GGUF pair (`mmproj` projector `idefics3`).

use burn::tensor::{Device, Tensor};
use serde_json::Value;

use super::llava::{HfTower, projection};
use super::preprocess::{Pixels, channel_first};
use super::resample::{Filter, Rgb};
use super::vit::{TowerWeights, VisionTower, VitConfig};
use super::{ImageEmbedding, VisionError, image_token_id, mmproj};
use crate::gguf::GgufFile;
use crate::model::layers::{Linear, read_back};
use crate::model::weights::SafetensorsWeights;

/// transformers' `MAX_IMAGE_SIZE` for Idefics3: no side beyond 4k after the first resize.
const MAX_SIDE: usize = 4096;

/// The image processor's settings (`Idefics3ImageProcessor`).
#[derive(Debug, Clone, PartialEq)]
struct Tiling {
    /// `size.longest_edge`, when the image is resized first.
    longest_edge: Option<usize>,
    /// `max_image_size.longest_edge`: a tile's side.
    tile: usize,
    split: bool,
    filter: Filter,
    rescale: Option<f64>,
    normalize: Option<([f32; 3], [f32; 3])>,
}

impl Tiling {
    fn from_json(v: &Value) -> Result<Self, VisionError> {
        let flag = |name: &str| v.get(name).and_then(Value::as_bool).unwrap_or(true);
        let edge = |field: &str, default: usize| {
            v.get(field).and_then(|s| s.get("longest_edge")).and_then(Value::as_u64).map_or(default, |n| n as usize)
        };
        let triple = |name: &str| -> Result<[f32; 3], VisionError> {
            let list = v.get(name).and_then(Value::as_array);
            match list.map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<_>>()) {
                None => Ok([0.5; 3]),
                Some(values) if values.len() == 3 => Ok([values[0] as f32, values[1] as f32, values[2] as f32]),
                Some(_) => Err(VisionError::Config(format!("`{name}` must hold three numbers"))),
            }
        };
        let tile = edge("max_image_size", 364);
        let longest_edge = flag("do_resize").then(|| edge("size", 4 * 364));
        if tile == 0 || longest_edge == Some(0) {
            return Err(VisionError::Config("image sizes must not be 0".into()));
        }
        let normalize = if flag("do_normalize") { Some((triple("image_mean")?, triple("image_std")?)) } else { None };
        if normalize.is_some_and(|(_, std)| std.contains(&0.0)) {
            return Err(VisionError::Config("`image_std` may not hold 0".into()));
        }
        Ok(Self {
            longest_edge,
            tile,
            split: flag("do_image_splitting"),
            filter: Filter::from_pil(v.get("resample").and_then(Value::as_u64).unwrap_or(1))?,
            rescale: flag("do_rescale").then(|| v.get("rescale_factor").and_then(Value::as_f64).unwrap_or(1.0 / 255.0)),
            normalize,
        })
    }

    /// The tiles of `image` (row by row, then the whole image) and the grid's rows and columns
    /// (0 × 0 when the image is one tile).
    fn tiles(&self, image: &Rgb) -> (Vec<Rgb>, usize, usize) {
        let mut image = image.clone();
        if let Some(longest) = self.longest_edge {
            let (h, w) = to_longest_edge(image.height, image.width, longest);
            let (h, w) = below_upper_bound(h, w, MAX_SIDE);
            image = image.resize(w, h, self.filter);
        }
        if !self.split {
            return (vec![image], 0, 0);
        }
        let (h, w) = whole_tiles(image.height, image.width, self.tile);
        image = image.resize(w, h, self.filter);
        let (rows, cols) = self.grid(h, w);
        if rows == 0 {
            return (vec![image], 0, 0);
        }
        let mut tiles = Vec::with_capacity(rows * cols + 1);
        for r in 0..rows {
            for c in 0..cols {
                tiles.push(crop(&image, r * self.tile, c * self.tile, self.tile));
            }
        }
        tiles.push(image.resize(self.tile, self.tile, self.filter));
        (tiles, rows, cols)
    }

    fn pixels(&self, tile: &Rgb) -> Pixels {
        channel_first(tile, self.rescale, self.normalize)
    }

    /// Rows and columns of tiles for a `height`×`width` image of whole tiles (0 × 0: one tile).
    fn grid(&self, height: usize, width: usize) -> (usize, usize) {
        if height <= self.tile && width <= self.tile {
            return (0, 0);
        }
        ((height - self.tile) / self.tile + 1, (width - self.tile) / self.tile + 1)
    }

    /// How many tiles (the whole image included) an image of `height`×`width` becomes.
    fn count(&self, height: usize, width: usize) -> usize {
        let (mut h, mut w) = (height, width);
        if let Some(longest) = self.longest_edge {
            (h, w) = to_longest_edge(h, w, longest);
            (h, w) = below_upper_bound(h, w, MAX_SIDE);
        }
        if !self.split {
            return 1;
        }
        let (h, w) = whole_tiles(h, w, self.tile);
        let (rows, cols) = self.grid(h, w);
        rows * cols + 1
    }
}

/// transformers' `_resize_output_size_rescale_to_max_len`: the longest side to `longest`, the
/// other scaled (truncated, then rounded up to even).
fn to_longest_edge(height: usize, width: usize, longest: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (h, w) = if width >= height {
        let h = (longest as f64 / aspect) as usize;
        (h + h % 2, longest)
    } else {
        let w = (longest as f64 * aspect) as usize;
        (longest, w + w % 2)
    };
    (h.max(1), w.max(1))
}

/// transformers' `_resize_output_size_scale_below_upper_bound`.
fn below_upper_bound(height: usize, width: usize, max: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (mut h, mut w) = (height, width);
    if width >= height && width > max {
        w = max;
        h = (w as f64 / aspect) as usize;
    } else if height > width && height > max {
        h = max;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

/// transformers' `resize_for_vision_encoder`: both sides up to whole tiles.
fn whole_tiles(height: usize, width: usize, tile: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let up = |n: usize| n.div_ceil(tile) * tile;
    if width >= height {
        let w = up(width);
        let h = up((w as f64 / aspect) as usize);
        (h.max(tile), w)
    } else {
        let h = up(height);
        let w = up((h as f64 * aspect) as usize);
        (h, w.max(tile))
    }
}

fn crop(image: &Rgb, top: usize, left: usize, side: usize) -> Rgb {
    let mut data = Vec::with_capacity(side * side * 3);
    for y in top..top + side {
        let row = (y * image.width + left) * 3;
        data.extend_from_slice(&image.data[row..row + side * 3]);
    }
    Rgb { width: side, height: side, data }
}

/// Where a model's weights come from: the tower's, and the connector's (`{connector_name}.weight`).
struct Parts<'a> {
    tower: &'a dyn TowerWeights,
    connector: &'a dyn TowerWeights,
    connector_name: &'a str,
}

/// A loaded SmolVLM / Idefics3 vision side.
pub struct Idefics3 {
    tower: VisionTower,
    scale: usize,
    projection: Linear,
    tiling: Tiling,
    pub image_token: u32,
    pub hidden: usize,
}

impl Idefics3 {
    /// Loads from the folder's parsed `config.json`, its weights and its image processor's config.
    pub fn load(
        config: &Value,
        weights: &SafetensorsWeights,
        processor: &Value,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let field = |name: &str| config.get(name).filter(|v| !v.is_null());
        // Idefics3VisionConfig's defaults where a config leaves them out.
        let defaults = [("hidden_act", Value::from("gelu_pytorch_tanh")), ("layer_norm_eps", Value::from(1e-6))];
        let vision = VitConfig::of_model(config, &defaults)?;
        let scale = field("scale_factor").and_then(Value::as_u64).unwrap_or(2) as usize;
        let parts = Parts {
            tower: &HfTower { weights, prefix: "model.vision_model." },
            connector: &HfTower { weights, prefix: "model.connector.modality_projection." },
            connector_name: "proj",
        };
        Self::build(parts, vision, scale, processor, image_token_id(config)?, text_hidden, device)
    }

    /// Loads llama.cpp's `mmproj` GGUF of a SmolVLM / Idefics3 model (`clip.projector_type`
    /// `idefics3`): the SigLIP tower, `clip.vision.projector.scale_factor` and the connector
    /// `mm.model.fc`. The file keeps only the processor's sizes: the rest is Idefics3's own
    /// processor (Lanczos, rescaled by 1/255, the file's mean and std), tiles of the tower's
    /// `image_size` after the longest edge is resized to `clip.vision.preproc_image_size` (four
    /// tiles where an older converter left that out, as transformers' default is).
    pub fn load_mmproj(
        file: &GgufFile,
        image_token: u32,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let meta = &file.metadata;
        let projector = mmproj::projector_type(meta)?;
        if projector != "idefics3" {
            return Err(VisionError::Config(format!("the `{projector}` projector is not Idefics3's")));
        }
        // llama.cpp runs SigLIP's feed-forward with the tanh GELU whatever `clip.use_gelu` says.
        let vision = mmproj::vit_config(meta, "gelu_pytorch_tanh")?;
        let size = |key: &str| -> Result<Option<usize>, VisionError> {
            meta.opt_u64(key)
                .map_err(mmproj::meta_error)?
                .map(usize::try_from)
                .transpose()
                .map_err(|_| VisionError::Config(format!("{key} is out of range")))
        };
        let scale = size("clip.vision.projector.scale_factor")?.unwrap_or(2);
        let tile = vision.image_size;
        let longest = size("clip.vision.preproc_image_size")?.unwrap_or(4 * tile);
        let processor = serde_json::json!({
            "size": {"longest_edge": longest},
            "max_image_size": {"longest_edge": tile},
            "resample": 1,
            "image_mean": mmproj::triple(meta, "image_mean")?,
            "image_std": mmproj::triple(meta, "image_std")?,
        });
        let weights = mmproj::MmprojTower::new(file, &vision);
        let parts = Parts { tower: &weights, connector: &weights, connector_name: "mm.model.fc" };
        Self::build(parts, vision, scale, &processor, image_token, text_hidden, device)
    }

    /// The model from its tower's config and weights, the shuffle's scale and the processor's
    /// config, checked to fit together.
    fn build(
        parts: Parts<'_>,
        vision: VitConfig,
        scale: usize,
        processor: &Value,
        image_token: u32,
        text_hidden: usize,
        device: &Device,
    ) -> Result<Self, VisionError> {
        let grid = vision.grid();
        if scale == 0 || !grid.is_multiple_of(scale) {
            return Err(VisionError::Config(format!("a {grid}×{grid} patch grid cannot be shuffled by {scale}")));
        }
        let hidden = vision.hidden_size;
        let tower = VisionTower::load(parts.tower, vision, true, device)?;
        let projection =
            projection(parts.connector, parts.connector_name, text_hidden, hidden * scale * scale, device)?;
        let tiling = Tiling::from_json(processor)?;
        if tiling.tile != tower.config().image_size {
            return Err(VisionError::Config(format!(
                "tiles of {} pixels for a tower that takes {}",
                tiling.tile,
                tower.config().image_size
            )));
        }
        Ok(Self { tower, scale, projection, tiling, image_token, hidden: text_hidden })
    }

    /// Image tokens `image` becomes (its tiles', computed from its size alone).
    pub fn rows_for(&self, image: &Rgb) -> usize {
        self.tiling.count(image.height, image.width) * self.tokens_per_tile()
    }

    /// Rows one tile becomes.
    fn tokens_per_tile(&self) -> usize {
        let grid = self.tower.config().grid();
        grid * grid / (self.scale * self.scale)
    }

    /// The pixel values of every tile of `image`, in prompt order.
    pub fn pixels(&self, image: &Rgb) -> Vec<Pixels> {
        self.tiling.tiles(image).0.iter().map(|t| self.tiling.pixels(t)).collect()
    }

    /// `image`'s rows and the prompt text its marker becomes.
    pub fn embed(&self, image: &Rgb) -> Result<ImageEmbedding, VisionError> {
        let (tiles, rows, cols) = self.tiling.tiles(image);
        let side = self.tower.config().image_size;
        let mut parts = Vec::with_capacity(tiles.len());
        for tile in &tiles {
            if tile.width != side || tile.height != side {
                return Err(VisionError::Config(format!(
                    "a {}×{} image without tiling: only whole {side}-pixel tiles are supported",
                    tile.width, tile.height
                )));
            }
            let states = self.tower.last_hidden_state(&self.tiling.pixels(tile))?;
            parts.push(self.projection.forward(pixel_shuffle(states, self.scale))?);
        }
        let projected = Tensor::cat(parts, 0);
        let [len, hidden] = projected.dims();
        let rows_data = read_back(projected)?;
        Ok(ImageEmbedding { rows: rows_data, len, hidden, expansion: Some(self.layout(rows, cols)) })
    }

    /// Idefics3's text for an image of `rows` × `cols` tiles (its processor's `replace_image_token`).
    fn layout(&self, rows: usize, cols: usize) -> String {
        const FAKE: &str = "<fake_token_around_image>";
        let tokens = "<image>".repeat(self.tokens_per_tile());
        if rows == 0 && cols == 0 {
            return format!("{FAKE}<global-img>{tokens}{FAKE}");
        }
        let mut text = String::new();
        for r in 1..=rows {
            for c in 1..=cols {
                text.push_str(&format!("{FAKE}<row_{r}_col_{c}>{tokens}"));
            }
            text.push('\n');
        }
        text.push_str(&format!("\n{FAKE}<global-img>{tokens}{FAKE}"));
        text
    }
}

/// Idefics3's pixel shuffle: `[side², d]` patch states to `[side²/s², d·s²]`, each row the
/// `s`×`s` patches of one block side by side.
fn pixel_shuffle(x: Tensor<2>, s: usize) -> Tensor<2> {
    let [seq, d] = x.dims();
    let side = (seq as f64).sqrt() as usize;
    x.reshape([side, side / s, d * s])
        .swap_dims(0, 1)
        .reshape([side / s, side / s, d * s * s])
        .swap_dims(0, 1)
        .reshape([seq / (s * s), d * s * s])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_transformers() {
        assert_eq!(to_longest_edge(37, 45, 64), (52, 64));
        assert_eq!(to_longest_edge(45, 37, 64), (64, 52));
        assert_eq!(to_longest_edge(480, 640, 2048), (1536, 2048));
        assert_eq!(below_upper_bound(100, 9000, 4096), (45, 4096));
        assert_eq!(whole_tiles(52, 64, 32), (64, 64));
        assert_eq!(whole_tiles(1536, 2048, 512), (1536, 2048));
        assert_eq!(whole_tiles(10, 10, 32), (32, 32));
    }

    #[test]
    fn the_layout_is_the_processors() {
        let tiling = Tiling::from_json(
            &serde_json::json!({"size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 32}}),
        )
        .unwrap();
        let image = Rgb { width: 45, height: 37, data: vec![7; 45 * 37 * 3] };
        let (tiles, rows, cols) = tiling.tiles(&image);
        assert_eq!((tiles.len(), rows, cols), (5, 2, 2));
        assert!(tiles.iter().all(|t| (t.width, t.height) == (32, 32)));
    }

    #[test]
    fn pixel_shuffle_moves_each_block_into_one_row() {
        let device = crate::model::device::select(hearth_settings::DeviceChoice::Flex).unwrap().device;
        // A 4×4 grid of 1-wide patches valued by their index.
        let x = crate::model::layers::upload((0..16).map(|v| v as f32).collect(), [16, 1], &device);
        let out = read_back(pixel_shuffle(x, 2)).unwrap();
        // transformers' pixel_shuffle on the same input (computed with torch).
        assert_eq!(out, vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]);
    }
}
