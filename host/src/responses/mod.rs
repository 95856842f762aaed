//! The Responses API's state outside a request: responses stored on disk ([`store`]) and the
//! background responses running now, which `cancel` can stop ([`running`]).

pub mod running;
pub mod store;

pub use running::RunningResponses;
pub use store::{ResponseStore, StoreError, StoredResponse};
