//! Write Hearth plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It implements one trait —
//! [`SamplerPlugin`], [`EndpointPlugin`], [`ModerationPlugin`] or [`ToolParserPlugin`] — and
//! exports it with the matching macro. Enable the crate feature of that kind (`sampler`,
//! `endpoint`, `moderation`, `tool-parser`). See the crate's README for the whole walk from
//! `cargo new` to a loaded plugin.
//!
//! ```ignore
//! use hearth_plugin_sdk::{Config, EndpointPlugin, Request, Response, export_endpoint};
//!
//! struct Hello;
//!
//! impl EndpointPlugin for Hello {
//!     fn handle(_config: &Config, request: Request) -> Result<Response, String> {
//!         Ok(Response::text(200, format!("hello from {}", request.path)))
//!     }
//! }
//!
//! export_endpoint!(Hello);
//! ```
//!
//! Plugins run sandboxed: no filesystem, network or environment variables, no clock unless the
//! `clock` grant is given, a memory cap, and a
//! CPU deadline per call. The functions of [`host`] reach the
//! model when the plugin's settings grant them.

#![deny(missing_docs)]

/// Generated bindings of the `hearth:plugin` WIT package. Use the traits and macros of the
/// crate root rather than these directly.
#[doc(hidden)]
pub mod bindings {
    /// The host functions, shared by every world.
    pub mod common {
        wit_bindgen::generate!({
            path: "wit",
            world: "host-only",
        });
    }

    /// The sampler world.
    #[cfg(feature = "sampler")]
    pub mod sampler {
        wit_bindgen::generate!({
            path: "wit",
            world: "sampler-plugin",
            with: {
                "hearth:plugin/host@0.1.0": crate::bindings::common::hearth::plugin::host,
                "hearth:plugin/types@0.1.0": crate::bindings::common::hearth::plugin::types,
            },
            pub_export_macro: true,
            export_macro_name: "__export_sampler",
            default_bindings_module: "hearth_plugin_sdk::bindings::sampler",
        });
    }

    /// The endpoint world.
    #[cfg(feature = "endpoint")]
    pub mod endpoint {
        wit_bindgen::generate!({
            path: "wit",
            world: "endpoint-plugin",
            with: {
                "hearth:plugin/host@0.1.0": crate::bindings::common::hearth::plugin::host,
                "hearth:plugin/types@0.1.0": crate::bindings::common::hearth::plugin::types,
            },
            pub_export_macro: true,
            export_macro_name: "__export_endpoint",
            default_bindings_module: "hearth_plugin_sdk::bindings::endpoint",
        });
    }

    /// The moderation world.
    #[cfg(feature = "moderation")]
    pub mod moderation {
        wit_bindgen::generate!({
            path: "wit",
            world: "moderation-plugin",
            with: {
                "hearth:plugin/host@0.1.0": crate::bindings::common::hearth::plugin::host,
                "hearth:plugin/types@0.1.0": crate::bindings::common::hearth::plugin::types,
            },
            pub_export_macro: true,
            export_macro_name: "__export_moderation",
            default_bindings_module: "hearth_plugin_sdk::bindings::moderation",
        });
    }

    /// The tool-parser world.
    #[cfg(feature = "tool-parser")]
    pub mod tool_parser {
        wit_bindgen::generate!({
            path: "wit",
            world: "tool-parser-plugin",
            with: {
                "hearth:plugin/host@0.1.0": crate::bindings::common::hearth::plugin::host,
                "hearth:plugin/types@0.1.0": crate::bindings::common::hearth::plugin::types,
            },
            pub_export_macro: true,
            export_macro_name: "__export_tool_parser",
            default_bindings_module: "hearth_plugin_sdk::bindings::tool_parser",
        });
    }
}

mod config;
pub mod host;

pub use config::Config;

#[cfg(feature = "sampler")]
mod sampler;
#[cfg(feature = "sampler")]
#[doc(hidden)]
pub use sampler::__Sampler;
#[cfg(feature = "sampler")]
pub use sampler::{Candidates, SamplerPlugin, Texts};

#[cfg(feature = "endpoint")]
mod endpoint;
#[cfg(feature = "endpoint")]
#[doc(hidden)]
pub use endpoint::__handle as __endpoint_handle;
#[cfg(feature = "endpoint")]
pub use endpoint::{EndpointPlugin, Request, Response};

#[cfg(feature = "moderation")]
mod moderation;
#[cfg(feature = "moderation")]
#[doc(hidden)]
pub use moderation::__classify as __moderation_classify;
#[cfg(feature = "moderation")]
pub use moderation::{Category, ModerationPlugin, Verdict};

#[cfg(feature = "tool-parser")]
mod tool_parser;
#[cfg(feature = "tool-parser")]
#[doc(hidden)]
pub use tool_parser::__ToolParser;
#[cfg(feature = "tool-parser")]
pub use tool_parser::{Call, Parsed, Tool, ToolCallDelta, ToolParserPlugin};
#[cfg(feature = "tool-parser")]
pub mod tool_calls;
