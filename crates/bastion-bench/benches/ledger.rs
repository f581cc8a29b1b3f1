//! `cargo bench -p bastion-bench --bench ledger`: durable journal entries per second on SQLite
//! and PostgreSQL, see `bastion_bench::ledger`. `BENCH_QUICK=1` for a smoke run.

fn main() -> std::process::ExitCode {
    bastion_bench::ledger::main()
}
