//! `cargo bench -p bastion-bench --bench agent`: a masked agent tool call against the same
//! REST tool call, see `bastion_bench::agent`. `BENCH_QUICK=1` for a smoke run.

fn main() -> std::process::ExitCode {
    bastion_bench::agent::main()
}
