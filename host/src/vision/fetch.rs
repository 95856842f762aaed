//! Getting an image's bytes from the URL a request gives: `data:` URLs decoded in place; http(s)
//! URLs fetched only when the `image_urls` setting allows it (off by default: the server never
//! dials out on a client's behalf unless told to), within a size cap, a timeout and a few
//! redirects, and — unless the setting is `any` — never to loopback, private, link-local or
//! other non-public addresses, checked on every address a name resolves to and on every
//! redirect (the URL is the client's, the network is the server's).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use hearth_settings::ImageUrls;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

use super::VisionError;

/// Largest image accepted, however it comes.
pub const MAX_IMAGE_BYTES: usize = 20 << 20;
/// Most redirects followed.
const MAX_REDIRECTS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(15);

/// Fetches images by URL under the server's policy.
#[derive(Clone)]
pub struct ImageFetcher {
    policy: ImageUrls,
    /// `None` when fetching is off; the reason when the client could not start.
    client: Option<Result<reqwest::Client, String>>,
}

impl ImageFetcher {
    pub fn new(policy: ImageUrls) -> Self {
        let client = match policy {
            ImageUrls::Off => None,
            ImageUrls::Public | ImageUrls::Any => {
                let allow_private = policy == ImageUrls::Any;
                let redirects = redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= MAX_REDIRECTS {
                        attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                    } else if let Err(e) = check_url(attempt.url(), allow_private) {
                        attempt.error(e.to_string())
                    } else {
                        attempt.follow()
                    }
                });
                // The TLS library's cryptography (the server's own TLS installs the same).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .dns_resolver(Arc::new(GuardedResolver { allow_private }))
                    .redirect(redirects)
                    // A proxy would resolve the name itself, past the address check.
                    .no_proxy()
                    .timeout(TIMEOUT)
                    .connect_timeout(Duration::from_secs(5))
                    .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("the HTTP client cannot start: {e}"));
                Some(client)
            }
        };
        Self { policy, client }
    }

    /// The bytes `url` holds.
    pub async fn bytes(&self, url: &str) -> Result<Vec<u8>, VisionError> {
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("data:") {
            return data_url(rest);
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| VisionError::Fetch(format!("not a URL: {e}")))?;
        let Some(client) = self.client.as_ref().map(|c| c.as_ref().map_err(|e| VisionError::Fetch(e.clone()))) else {
            return Err(VisionError::Fetch(match parsed.scheme() {
                "http" | "https" => "this server does not fetch image URLs (start it with `--image-urls public` to \
                                     allow it); send the image as a `data:image/…;base64,…` URL"
                    .into(),
                other => format!("`{other}:` URLs are not accepted; send a `data:` URL"),
            }));
        };
        let client = client?;
        check_url(&parsed, self.policy == ImageUrls::Any)?;
        let response = client.get(parsed).send().await.map_err(|e| VisionError::Fetch(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(VisionError::Fetch(format!("the image URL answered {status}")));
        }
        if response.content_length().is_some_and(|n| n > MAX_IMAGE_BYTES as u64) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| VisionError::Fetch(describe(&e)))?;
            if body.len() + chunk.len() > MAX_IMAGE_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn too_big() -> VisionError {
    VisionError::Fetch(format!("the image is larger than {} MiB", MAX_IMAGE_BYTES >> 20))
}

/// A reqwest error with its causes (the address check's reason sits inside a connect error).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "fetching the image timed out".to_owned() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `data:[<media type>];base64,<data>`.
fn data_url(rest: &str) -> Result<Vec<u8>, VisionError> {
    let (header, data) =
        rest.split_once(',').ok_or_else(|| VisionError::Fetch("a `data:` URL needs a `,` before its data".into()))?;
    if !header.ends_with(";base64") {
        return Err(VisionError::Fetch("a `data:` image URL must be base64 (`data:image/png;base64,…`)".into()));
    }
    if data.len() / 4 * 3 > MAX_IMAGE_BYTES {
        return Err(too_big());
    }
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(cleaned.as_bytes()))
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes()))
        .map_err(|e| VisionError::Fetch(format!("the `data:` URL's base64 is invalid: {e}")))
}

/// A URL the fetcher may go to: http(s), and a literal address only when public (names are
/// checked when they resolve).
fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), VisionError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(VisionError::Fetch(format!("`{}:` URLs are not fetched", url.scheme())));
    }
    let host = url.host_str().ok_or_else(|| VisionError::Fetch("the image URL has no host".into()))?;
    let literal: Option<IpAddr> = host.trim_start_matches('[').trim_end_matches(']').parse().ok();
    match literal {
        Some(ip) if !allow_private && !is_public(ip) => Err(private(&ip.to_string())),
        _ => Ok(()),
    }
}

fn private(what: &str) -> VisionError {
    VisionError::Fetch(format!(
        "{what} is a loopback, private or link-local address, which this server does not fetch from \
         (`--image-urls any` allows it)"
    ))
}

/// Whether `ip` is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT) and the benchmarking range.
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local (fc00::/7) and link-local (fe80::/10).
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Documentation.
        || first == 0x2001 && ip.segments()[1] == 0x0db8)
}

/// Resolves names as the system does, keeping only the addresses the policy allows.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.iter().copied().filter(|a| allow_private || is_public(a.ip())).collect();
            if allowed.is_empty() {
                let why =
                    if found.is_empty() { format!("{host} does not resolve") } else { private(&host).to_string() };
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "::"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn data_urls_decode_and_bad_ones_say_why() {
        assert_eq!(data_url("image/png;base64,aGk=").unwrap(), b"hi");
        assert_eq!(data_url("image/png;base64,aG\nk=").unwrap(), b"hi");
        assert!(data_url("image/png,hi").is_err());
        assert!(data_url("image/png;base64").is_err());
        assert!(data_url("image/png;base64,***").is_err());
    }

    #[tokio::test]
    async fn urls_the_policy_refuses_never_leave_the_server() {
        let off = ImageFetcher::new(ImageUrls::Off);
        let err = off.bytes("http://example.com/cat.png").await.unwrap_err().to_string();
        assert!(err.contains("--image-urls"), "{err}");
        let file = off.bytes("file:///etc/passwd").await.unwrap_err().to_string();
        assert!(file.contains("`file:`"), "{file}");
        let public = ImageFetcher::new(ImageUrls::Public);
        let err = public.bytes("http://127.0.0.1:9/x.png").await.unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
        let err = public.bytes("http://[::1]:9/x.png").await.unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
        let err = public.bytes("http://localhost:9/x.png").await.unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }
}
