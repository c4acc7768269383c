//! Shared by Ringline's criterion benchmarks (and, later, the load generator): the
//! global allocator is the one the `edge` and `store` binaries ship with (mimalloc),
//! so allocation-heavy figures (shared frames, link encoding) are the production ones.
//! Each bench links this crate with `use benches as _;`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
