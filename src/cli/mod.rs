//! The command-line front ends of the library.

pub mod lock;
pub mod run;
