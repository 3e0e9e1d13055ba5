//! Tests of the simulator through its HTTP API.
