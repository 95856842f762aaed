//! Running the server: bind (plain or TLS), announce the address, load the model in the
//! background (health answers 503 meanwhile), and serve until Ctrl-C.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_settings::Settings;

use crate::http::{self, AppState, ModelState};
use crate::plugins::{PluginError, PluginRegistry};
use crate::serving::{StartError, load_model};

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("invalid listen address `{0}`")]
    Address(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("model `{name}` not found: looked for {tried}")]
    ModelNotFound { name: String, tried: String },
    #[error("{0}")]
    Load(#[from] StartError),
    #[error("{0}")]
    Plugin(#[from] PluginError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Finds `--model NAME`: a path as given, else a file or folder in the model dir (`.gguf` optional).
pub fn resolve_model_path(name: &str, model_dir: &Path) -> Result<PathBuf, ServeError> {
    let given = PathBuf::from(name);
    if given.exists() {
        return Ok(given);
    }
    crate::serving::model_in_dir(name, model_dir).ok_or_else(|| ServeError::ModelNotFound {
        name: name.to_owned(),
        tried: std::iter::once(given)
            .chain(crate::serving::model_paths(name, model_dir))
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

fn bind_addr(settings: &Settings) -> Result<SocketAddr, ServeError> {
    let ip: IpAddr = match settings.listen_host.as_deref() {
        Some(host) => http::listen_ip(host).ok_or_else(|| ServeError::Address(host.to_owned()))?,
        None if settings.listen => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Ok(SocketAddr::new(ip, settings.api_port))
}

/// Serves until Ctrl-C (or until loading the start-up model fails).
pub async fn run(settings: Settings) -> Result<(), ServeError> {
    if settings.debug {
        tracing::warn!("OPENEDAI_DEBUG is on: request and response content will be logged");
    }
    let model_path = match &settings.model {
        Some(name) => Some(resolve_model_path(name, &settings.model_dir)?),
        None => None,
    };
    // Plugins load before the server listens: one that cannot load stops start-up, naming it.
    let plugins = Arc::new(PluginRegistry::load(&settings)?);
    let addr = bind_addr(&settings)?;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr: addr.to_string(), source })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;

    let progress = Arc::new(crate::model::LoadProgress::default());
    let initial = match &model_path {
        Some(p) => ModelState::Loading(crate::model::model_id(p), progress.clone()),
        None => ModelState::None,
    };
    let state = Arc::new(AppState::new(settings.clone(), plugins.clone(), initial));
    let app = http::app(state.clone());

    let tls = match (&settings.ssl_certfile, &settings.ssl_keyfile) {
        (Some(cert), Some(key)) => {
            // One process-wide provider; a second install (tests) is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| ServeError::Tls(format!("cannot use {} / {}: {e}", cert.display(), key.display())))?,
            )
        }
        (None, None) => None,
        _ => {
            return Err(ServeError::Tls("give both --ssl-certfile and --ssl-keyfile".into()));
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shown_host = match local.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    // Tests and scripts read this line to find the port.
    println!("Hearth is serving the OpenAI API at {scheme}://{shown_host}:{}/v1", local.port());

    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        stop_signal().await;
        tracing::info!("shutting down");
        shutdown.graceful_shutdown(Some(Duration::from_secs(5)));
    });

    let (load_failed_tx, mut load_failed_rx) = tokio::sync::oneshot::channel::<ServeError>();
    if let Some(path) = model_path {
        let state = state.clone();
        let settings = settings.clone();
        let plugins = plugins.clone();
        tokio::task::spawn_blocking(move || {
            match load_model(&path, &settings, &plugins, &state.embeddings, &progress) {
                Ok(served) => {
                    tracing::info!("model `{}` is ready", served.name);
                    state.set_model(ModelState::Ready(Arc::new(served)));
                }
                Err(e) => {
                    tracing::error!("{e}");
                    state.set_model(ModelState::Failed(e.to_string()));
                    let _ = load_failed_tx.send(e.into());
                }
            }
        });
    }

    // The peer address names the caller whose generations `stop-generation` stops.
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = async {
        match tls {
            Some(config) => axum_server::from_tcp_rustls(listener, config)?.handle(handle.clone()).serve(service).await,
            None => axum_server::from_tcp(listener)?.handle(handle.clone()).serve(service).await,
        }
    };
    tokio::select! {
        result = server => result.map_err(ServeError::from),
        Ok(err) = &mut load_failed_rx => {
            handle.shutdown();
            Err(err)
        }
    }
}

/// Ctrl-C (SIGINT), or on Unix SIGTERM: what `docker stop` and Kubernetes send. As a
/// container's PID 1 a process without a SIGTERM handler would ignore it until killed.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot watch for SIGTERM ({e}); Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
