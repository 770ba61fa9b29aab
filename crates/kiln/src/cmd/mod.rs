pub mod registry;
pub mod transport;
