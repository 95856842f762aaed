//! What a caught panic said: the one place that reads a panic payload, for the model thread,
//! the HTTP panic guard and the threads that compile request grammars.

use std::any::Any;

/// The message of a panic payload (`panic!` with a literal or a formatted string), or
/// "unknown panic" for anything else.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
