//! Hearth's stored state, in SQLite files in the user data folder: the Responses API's
//! responses ([`responses`]).

pub mod responses;

pub use responses::{ResponseStore, StoreError, StoredResponse};
