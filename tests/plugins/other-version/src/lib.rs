//! An endpoint plugin built for `hearth:plugin@0.2.0`, which this host does not speak.

wit_bindgen::generate!({ path: "wit", world: "endpoint-plugin" });

struct Future;

impl exports::hearth::plugin::endpoint::Guest for Future {
    fn handle(
        _config: String,
        _request: exports::hearth::plugin::endpoint::Request,
    ) -> Result<exports::hearth::plugin::endpoint::Response, String> {
        Ok(exports::hearth::plugin::endpoint::Response { status: 200, body: b"from the future".to_vec() })
    }
}

export!(Future);
