//! Choosing where the model runs: burn's wgpu backend (a GPU, or Mesa's lavapipe on a machine
//! without one) or its pure-Rust CPU backend, flex. `auto` takes a real GPU adapter when there
//! is one and flex otherwise.

use burn::tensor::Device;
use burn::tensor::wgpu::wgpu::{Backend, DeviceType};
pub use hearth_settings::DeviceChoice;

/// The backend a [`ComputeDevice`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Wgpu,
    Flex,
}

/// A ready device and what it is.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub device: Device,
    pub backend: BackendKind,
    /// Human-readable description, e.g. "wgpu: llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, Vulkan)".
    pub description: String,
}

/// A device that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "no wgpu adapter could be opened ({0}); install a Vulkan driver (on Debian: \
         `apt-get install mesa-vulkan-drivers libvulkan1`) or run with --device flex"
    )]
    NoAdapter(String),
    /// The first attempt's error, repeated for later ones.
    #[error("{0}")]
    Opened(String),
}

impl ComputeDevice {
    pub fn flex() -> Self {
        Self { device: Device::flex(), backend: BackendKind::Flex, description: "flex (CPU)".into() }
    }

    pub fn is_cpu(&self) -> bool {
        self.backend == BackendKind::Flex
    }
}

/// Opens the requested device.
pub fn select(request: DeviceChoice) -> Result<ComputeDevice, DeviceError> {
    match request {
        DeviceChoice::Flex => Ok(ComputeDevice::flex()),
        DeviceChoice::Wgpu => open_wgpu().map(|(dev, _)| dev),
        DeviceChoice::Auto => match open_wgpu() {
            Ok((dev, false)) => {
                tracing::info!("wgpu offers only a CPU adapter ({}); using flex", dev.description);
                Ok(ComputeDevice::flex())
            }
            Ok((dev, true)) => Ok(dev),
            Err(e) => {
                tracing::info!("no GPU ({e}); using flex");
                Ok(ComputeDevice::flex())
            }
        },
    }
}

/// Opens wgpu's preferred adapter once per process; the flag tells whether it is a real GPU (not
/// a CPU rasteriser such as lavapipe). burn registers one runtime per device and refuses a
/// second, so the chat model, a reloaded model and the embedding model share this one.
fn open_wgpu() -> Result<(ComputeDevice, bool), DeviceError> {
    static OPENED: std::sync::OnceLock<Result<(ComputeDevice, bool), String>> = std::sync::OnceLock::new();
    OPENED.get_or_init(|| open_wgpu_once().map_err(|e| e.to_string())).clone().map_err(DeviceError::Opened)
}

fn open_wgpu_once() -> Result<(ComputeDevice, bool), DeviceError> {
    // wgpu reports a missing driver by panicking on some paths; keep that from taking us down.
    let opened = std::panic::catch_unwind(|| {
        let options = Device::wgpu_options();
        // On Linux burn's kernels run only on Vulkan: asking for it alone also keeps wgpu from
        // probing OpenGL/EGL, which prints driver noise on machines without a display.
        #[cfg(target_os = "linux")]
        let options = options.graphics_api(burn::tensor::wgpu::WgpuBackend::Vulkan);
        options.init_with_setup()
    })
    .map_err(|_| DeviceError::NoAdapter("the wgpu runtime panicked while looking for an adapter".into()))?;
    let (device, setup) = opened.map_err(|e| DeviceError::NoAdapter(e.to_string()))?;
    let info = setup.adapter.get_info();
    // wgpu falls back to OpenGL when there is no Vulkan/Metal/DX12 driver; burn's kernels need
    // compute features (subgroups) that its GL path lacks, and fail at the first matmul.
    if matches!(info.backend, Backend::Gl | Backend::BrowserWebGpu | Backend::Noop) {
        return Err(DeviceError::NoAdapter(format!(
            "the only adapter is `{}` on {:?}, which burn's kernels do not support",
            info.name, info.backend
        )));
    }
    let kind = match info.device_type {
        DeviceType::Cpu => "Cpu",
        DeviceType::DiscreteGpu => "DiscreteGpu",
        DeviceType::IntegratedGpu => "IntegratedGpu",
        DeviceType::VirtualGpu => "VirtualGpu",
        DeviceType::Other => "Other",
    };
    let description = format!("wgpu: {} ({kind}, {:?})", info.name, info.backend);
    let real_gpu = info.device_type != DeviceType::Cpu;
    // Counting launches costs an atomic per dispatch; what it shows (`device_work` in
    // /v1/internal/model/info) is how launch-bound the GPU path is.
    hearth_gpu_kernels::counters::watch_launches();
    Ok((ComputeDevice { device, backend: BackendKind::Wgpu, description }, real_gpu))
}
