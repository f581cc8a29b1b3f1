//! `cargo bench -p bastion-bench`: see the `bastion_bench` crate docs. `BENCH_QUICK=1` for a
//! smoke run.

fn main() -> std::process::ExitCode {
    bastion_bench::main()
}
