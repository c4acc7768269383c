//! Shared helpers for Ringline's criterion benchmarks (and, later, the load generator).
