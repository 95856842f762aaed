//! Hearth: a local, private, OpenAI-compatible inference server. The library holds everything;
//! `main.rs` only parses the command line.

pub mod audio;
pub mod constraint;
pub mod decoded_stream;
pub mod diffusion;
pub mod embedding_batches;
pub mod embedding_service;
pub mod engine;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod http;
pub mod model;
pub mod panics;
pub mod plugin_services;
pub mod plugins;
pub mod prompt;
pub mod sampling;
pub mod server;
pub mod serving;
pub mod speech_service;
pub mod store;
pub mod telemetry;
pub mod threads;
pub mod tokenizer;
pub mod transcription_service;
pub mod vision;
