//! Query strings read as name–value pairs, so a repeated name (`include=a&include=b`) is
//! allowed, an unknown one can be named in the error, and a malformed query is an
//! OpenAI-shaped 400 rather than axum's plain-text rejection.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The request's query, as `(name, value)` pairs in order.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(raw)
            .map(QueryPairs)
            .map_err(|e| ApiError::bad_request(format!("the query string cannot be read: {e}")))
    }
}

impl QueryPairs {
    /// Refuses names outside `known` (`include[]` counts as `include`).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !known.contains(&k.trim_end_matches("[]"))) {
            Some((k, _)) => Err(ApiError::unknown_param(k)),
            None => Ok(()),
        }
    }

    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `name` as a whole number, if given.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| v.parse().map_err(|_| ApiError::invalid_param(name, format!("`{name}` must be a whole number"))))
            .transpose()
    }

    /// `name` as `true` / `false`, if given.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::invalid_param(name, format!("`{name}` must be `true` or `false`"))),
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_unknown_names() {
        let q = QueryPairs(serde_urlencoded::from_str("include=a&include%5B%5D=b&limit=3").unwrap());
        assert!(q.only(&["include", "limit"]).is_ok());
        assert_eq!(q.only(&["limit"]).unwrap_err().param.as_deref(), Some("include"));
        assert_eq!(q.integer("limit").unwrap(), Some(3));
        assert!(QueryPairs(vec![("limit".into(), "x".into())]).integer("limit").is_err());
    }
}
