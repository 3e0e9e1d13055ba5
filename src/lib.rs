pub mod event;
pub mod output;
pub mod simulator;
