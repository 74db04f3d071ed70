//! sockloop (skeleton: the loop lands next).
pub mod protocol;
pub mod stats;
