//! `cargo bench -p bastion-bench --bench webhooks`: webhook ingestion per second on SQLite
//! and PostgreSQL, see `bastion_bench::webhooks`. `BENCH_QUICK=1` for a smoke run.

fn main() -> std::process::ExitCode {
    bastion_bench::webhooks::main()
}
