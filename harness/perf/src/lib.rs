//! Nothing to link: this crate holds the instruction-count benchmarks
//! (`benches/hot_paths.rs`), run by `ci/perf/check.sh` under callgrind through gungraun.
