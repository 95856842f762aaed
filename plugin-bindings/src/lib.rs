//! Host-side bindings of the `hearth:plugin` WIT package (`plugin-sdk/wit`), one module per
//! world. They live in a crate of their own because `bindgen!` output is large and slow to
//! compile; the host's plugin runtime (`host/src/plugins/`) implements the imports.

/// The WIT package version this host speaks; components built for another are refused.
pub const WIT_PACKAGE: &str = "hearth:plugin";
pub const WIT_VERSION: &str = "0.1.0";

/// `sampler-plugin`: per-token candidate editing.
pub mod sampler {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "sampler-plugin",
        with: {
            "hearth:plugin/candidates.candidate-set": crate::CandidateSet,
        },
    });
}

/// `endpoint-plugin`: HTTP routes under `/v1/plugins/{name}/`.
pub mod endpoint {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "endpoint-plugin",
        // One `host` interface for every world: its trait is implemented once.
        with: {
            "hearth:plugin/host": crate::sampler::hearth::plugin::host,
            "hearth:plugin/types": crate::sampler::hearth::plugin::types,
        },
    });
}

/// `moderation-plugin`: text classification for `/v1/moderations`.
pub mod moderation {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "moderation-plugin",
        // One `host` interface for every world: its trait is implemented once.
        with: {
            "hearth:plugin/host": crate::sampler::hearth::plugin::host,
            "hearth:plugin/types": crate::sampler::hearth::plugin::types,
        },
    });
}

/// `tool-parser-plugin`: streamed tool-call parsing.
pub mod tool_parser {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "tool-parser-plugin",
        // One `host` interface for every world: its trait is implemented once.
        with: {
            "hearth:plugin/host": crate::sampler::hearth::plugin::host,
            "hearth:plugin/types": crate::sampler::hearth::plugin::types,
        },
    });
}

/// The host's representation of a `candidate-set` resource: the candidates of one sampling
/// step, read and edited in place by the guest. A banned candidate's logit is `-inf`.
#[derive(Debug, Default, Clone)]
pub struct CandidateSet {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
}
